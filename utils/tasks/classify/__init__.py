"""The classify task's plug-ins (task, loss, metric, dataset, ...)."""
