# The worker, CLI and sandbox image used by docker-compose.yml.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY streams ./streams
COPY connectors ./connectors
COPY sandbox ./sandbox
COPY schemas ./schemas
RUN pip install --no-cache-dir -e . && useradd --uid 10001 streams && mkdir /data && chown streams /data
USER streams
ENV STREAMS_DATA_DIR=/data
ENTRYPOINT ["streams"]
CMD ["worker"]
