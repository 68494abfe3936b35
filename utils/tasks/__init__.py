"""The tasks: one folder each (utils/tasks/<task>/), registered in registry.py. Nothing is imported here, so the
layers below the tasks can import the registry alone."""
