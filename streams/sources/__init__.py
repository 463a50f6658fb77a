"""Sources: processes that read an external API and produce what they read to Kafka."""
