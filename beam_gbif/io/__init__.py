"""The edges: the GBIF API client, Darwin Core Archives, the HTTP fetch engine and the one Store
(local folder or gs://) through which every write goes (see ARCHITECTURE.md)."""
