"""Darwin Core Archives: meta.xml, resolving and caching GBIF downloads, row parsing."""
