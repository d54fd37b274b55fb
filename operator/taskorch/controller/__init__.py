"""The operator: kopf handlers, the status writer and the Kubernetes calls they need."""
