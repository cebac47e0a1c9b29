"""E-mails in German for every event a person cares about; none lost, none sent twice."""
