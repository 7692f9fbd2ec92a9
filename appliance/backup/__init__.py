"""Online backup and verified restore of a data directory."""

from appliance.backup.archive import BackupReport, backup, restore

__all__ = ["BackupReport", "backup", "restore"]
