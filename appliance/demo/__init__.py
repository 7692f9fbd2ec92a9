"""The demo: the whole loop on generated data, from registration to retraining."""
