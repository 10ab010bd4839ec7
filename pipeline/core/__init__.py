"""What several stages share: the params schema and loader, the task registry and metrics, model
loading and saving, the tokenized splits, atomic writes and the environment record."""
