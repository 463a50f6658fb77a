"""Package data: the local broker script ``kafka.sh`` and the ``pom.xml`` it fetches the Kafka jars with.

``streams.kafka.local`` runs it; it keeps its state outside the package (see the script's header).
"""
