"""Report writers: console (rich renderables) and CSV/JSON export."""
