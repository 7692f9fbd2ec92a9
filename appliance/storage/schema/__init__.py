"""Schema migrations, one module per area; see ``appliance.storage.migrations``."""
