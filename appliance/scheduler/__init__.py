"""Cron schedules that queue jobs, and the single scheduler daemon that fires them."""

from appliance.scheduler.schedules import (
    Schedule,
    add_schedule,
    fire_due,
    get_schedule,
    list_schedules,
    remove_schedule,
    set_enabled,
)

__all__ = ["Schedule", "add_schedule", "fire_due", "get_schedule", "list_schedules",
           "remove_schedule", "set_enabled"]
