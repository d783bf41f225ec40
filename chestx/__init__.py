"""chestx: chest X-ray multi-label classification benchmark."""
