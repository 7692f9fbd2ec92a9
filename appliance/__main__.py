"""``python -m appliance`` runs the CLI (what ``appliance up`` uses to start its children)."""

from appliance.cli import main

main(prog_name="appliance")
