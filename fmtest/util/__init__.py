"""Small tools every layer may use: atomic writes, credential redaction, SQLite in WAL mode, the thread pin,
optional-SDK detection and loading a user's class by name. None of them knows what a case or a model is."""
