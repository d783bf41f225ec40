"""Published per-finding results as data (results.yaml) and the code that reads them (registry)."""
