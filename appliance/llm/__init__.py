"""Language models: model folders, chat templates, the generation runtime."""
