"""Storage: the SQLite databases, their migrations, and the blob store."""
