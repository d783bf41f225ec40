"""What every layer shares, importing no other chestx package but `metrics`: the run folder's vocabulary and file
formats (`run_folder`), safe checkpoint loading (`checkpoint_io`), the machine and its fast defaults (`hardware`),
and figure saving (`figures`)."""
