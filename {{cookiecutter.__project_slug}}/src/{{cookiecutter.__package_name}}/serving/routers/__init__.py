"""One module per router."""
