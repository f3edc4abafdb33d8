"""AI agents on calls: backends chosen like Django backends (``MEDIASTREAM["AGENT"]``), their tools,
and the conversation engine that holds a call's conversation."""
