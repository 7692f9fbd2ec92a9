"""Checks and facts about the appliance's own installation."""
