"""Infrastructure shared by every service: configuration, database, events, errors."""
