# The worker, CLI and sandbox image used by docker-compose.yml.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY streams ./streams
COPY connectors ./connectors
COPY sandbox ./sandbox
COPY schemas ./schemas
COPY pipelines ./pipelines
COPY examples ./examples
RUN pip install --no-cache-dir -e . && useradd --uid 10001 streams && mkdir /data && chown streams /data
USER streams
ENV STREAMS_DATA_DIR=/data STREAMS_APP=pipelines.orders:pipeline
ENTRYPOINT ["streams"]
CMD ["worker"]
