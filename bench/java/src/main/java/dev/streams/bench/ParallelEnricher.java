package dev.streams.bench;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.confluent.parallelconsumer.ParallelConsumerOptions;
import io.confluent.parallelconsumer.ParallelConsumerOptions.ProcessingOrder;
import io.confluent.parallelconsumer.internal.DrainingCloseable.DrainingMode;
import io.confluent.parallelconsumer.vertx.VertxParallelEoSStreamProcessor;
import io.vertx.core.Future;
import io.vertx.core.Promise;
import io.vertx.core.buffer.Buffer;
import io.vertx.core.json.JsonObject;
import io.vertx.ext.web.client.HttpResponse;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericDatumWriter;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryDecoder;
import org.apache.avro.io.BinaryEncoder;
import org.apache.avro.io.DecoderFactory;
import org.apache.avro.io.EncoderFactory;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.net.URI;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Collection;
import java.util.HashMap;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

/**
 * The bench's "PC" contender: what a Java team would write for ordered, concurrent enrichment.
 *
 * <pre>
 * java -jar bench/java/target/pc-enricher.jar --bootstrap 127.0.0.1:9092 --input in --output out --group g \
 *     --api-url http://127.0.0.1:8080 --schemas-dir schemas
 * </pre>
 *
 * Confluent Parallel Consumer 0.5.3.2 with ordering KEY (events of one key one at a time, keys concurrently, up to
 * --max-in-flight at once) and its Vert.x module ({@link VertxParallelEoSStreamProcessor#vertxHttpWebClient}): for
 * each record, decode the Confluent-framed Avro OrderPlaced (writer schema by the frame's id, resolved to the latest
 * OrderPlaced, like B1), GET {api-url}/v1/customers/{customer_id} with the library's Vert.x WebClient, build the
 * EnrichedOrder exactly like B1 (the order's fields, the customer's five fields as strings, enriched_at = now,
 * pipeline = the group; every other field its schema default), encode it with the latest EnrichedOrder schema and its
 * pinned id, and send it (acks=all, key kept, header event-id). The future handed back to the library completes
 * only when the output is acknowledged, so the library commits (its default, periodic asynchronous consumer commits)
 * only offsets whose outputs are on the broker. A failed call or send fails the future: the library retries the
 * record (its default, after 1 s), keeping the key's order.
 */
public final class ParallelEnricher {

    static final String INPUT_SUBJECT = "dev.streams.orders.OrderPlaced";
    static final String OUTPUT_SUBJECT = "dev.streams.orders.EnrichedOrder";
    static final String EVENT_ID_HEADER = "event-id";
    static final String[] CUSTOMER_FIELDS = {"customer_id", "name", "tier", "country", "since"};

    public static void main(String[] argv) throws Exception {
        System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", System.getProperty("pc.log", "warn"));
        System.setProperty("org.slf4j.simpleLogger.showDateTime", "true");
        Args args = Args.parse(argv);
        Registry registry = Registry.load(Path.of(args.schemasDir));
        Enrichment enrichment = new Enrichment(registry, args.group);
        URI api = URI.create(args.apiUrl);
        String host = api.getHost();
        int port = api.getPort() != -1 ? api.getPort() : ("https".equals(api.getScheme()) ? 443 : 80);
        String basePath = (api.getRawPath() == null ? "" : api.getRawPath().replaceAll("/+$", "")) + "/v1/customers/";

        Properties consumerProps = new Properties();
        consumerProps.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, args.bootstrap);
        consumerProps.put(ConsumerConfig.GROUP_ID_CONFIG, args.group);
        consumerProps.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false); // the library commits
        consumerProps.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        KafkaConsumer<byte[], byte[]> consumer =
                new KafkaConsumer<>(consumerProps, new ByteArrayDeserializer(), new ByteArrayDeserializer());

        Properties producerProps = new Properties();
        producerProps.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, args.bootstrap);
        producerProps.put(ProducerConfig.ACKS_CONFIG, "all");
        producerProps.put(ProducerConfig.LINGER_MS_CONFIG, 5); // as B1: linger 5 ms, 256 KB batches
        producerProps.put(ProducerConfig.BATCH_SIZE_CONFIG, 256 * 1024);
        KafkaProducer<byte[], byte[]> producer =
                new KafkaProducer<>(producerProps, new ByteArraySerializer(), new ByteArraySerializer());
        producer.partitionsFor(args.output); // metadata now, so no send blocks a Vert.x event loop for it

        ParallelConsumerOptions<byte[], byte[]> options = ParallelConsumerOptions.<byte[], byte[]>builder()
                .consumer(consumer)
                .ordering(ProcessingOrder.KEY)
                .maxConcurrency(args.maxInFlight)
                .build();
        // The simple constructor: the library makes its Vert.x and a WebClient pooled to maxConcurrency connections.
        VertxParallelEoSStreamProcessor<byte[], byte[]> pc = new VertxParallelEoSStreamProcessor<>(options);

        CountDownLatch stop = new CountDownLatch(1);
        CountDownLatch closed = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            stop.countDown();
            try {
                closed.await(25, TimeUnit.SECONDS);
            } catch (InterruptedException ignored) {
                Thread.currentThread().interrupt();
            }
        }, "pc-enricher-shutdown"));

        pc.subscribe(List.of(args.input), new ConsumerRebalanceListener() {
            @Override
            public void onPartitionsRevoked(Collection<TopicPartition> partitions) {
            }

            @Override
            public void onPartitionsAssigned(Collection<TopicPartition> partitions) {
                System.out.println("pc-enricher: assigned " + partitions.size() + " partition(s)");
                System.out.flush();
            }
        });
        pc.vertxHttpWebClient((webClient, context) -> {
            ConsumerRecord<byte[], byte[]> record = context.getSingleConsumerRecord();
            GenericRecord order = enrichment.decode(record.value());
            String customerId = order.get("customer_id").toString();
            return webClient.get(port, host, basePath + customerId).send().compose(response -> {
                if (response.statusCode() != 200) {
                    return Future.failedFuture("GET customer " + customerId + ": HTTP " + response.statusCode());
                }
                JsonObject customer = response.bodyAsJsonObject();
                byte[] value = enrichment.encode(order, customer);
                RecordHeaders headers = new RecordHeaders();
                headers.add(EVENT_ID_HEADER, order.get("event_id").toString().getBytes(StandardCharsets.UTF_8));
                Promise<HttpResponse<Buffer>> acked = Promise.promise();
                producer.send(new ProducerRecord<>(args.output, null, record.key(), value, headers),
                        (metadata, error) -> {
                            if (error == null) {
                                acked.complete(response);
                            } else {
                                acked.fail(error);
                            }
                        });
                return acked.future();
            });
        }, sent -> {
        });
        System.out.println("pc-enricher: subscribed to " + args.input + " as group " + args.group + ", writing "
                + args.output + " (Parallel Consumer, ordering KEY, maxConcurrency " + args.maxInFlight + ")");
        System.out.flush();

        int code = 0;
        while (!stop.await(200, TimeUnit.MILLISECONDS)) {
            if (pc.isClosedOrFailed()) {
                System.err.println("pc-enricher: the parallel consumer stopped: " + pc.getFailureCause());
                code = 1;
                break;
            }
        }
        try {
            pc.close(Duration.ofSeconds(10), DrainingMode.DONT_DRAIN); // finishes in-flight work, commits
        } catch (Exception e) {
            System.err.println("pc-enricher: close: " + e);
            code = 1;
        } finally {
            producer.close(Duration.ofSeconds(5));
            closed.countDown();
        }
        System.out.println("pc-enricher: closed");
        System.out.flush();
        if (code != 0 && stop.getCount() > 0) { // failed by itself, not stopped by a signal (exit would block then)
            System.exit(code);
        }
    }

    /** The command line of the Python baselines (bench/baselines/common.py), plus --schemas-dir. */
    record Args(String bootstrap, String input, String output, String group, String apiUrl, int batchSize,
                int maxInFlight, String schemasDir) {

        static Args parse(String[] argv) {
            Map<String, String> values = new HashMap<>(Map.of("--api-url", "http://127.0.0.1:8080",
                    "--batch-size", "500", "--max-in-flight", "256", "--schemas-dir", "schemas"));
            for (int i = 0; i < argv.length; i++) {
                String name = argv[i];
                String value;
                int eq = name.indexOf('=');
                if (eq > 0) {
                    value = name.substring(eq + 1);
                    name = name.substring(0, eq);
                } else if (i + 1 < argv.length) {
                    value = argv[++i];
                } else {
                    throw usage("missing value for " + name);
                }
                if (!List.of("--bootstrap", "--input", "--output", "--group", "--api-url", "--batch-size",
                        "--max-in-flight", "--schemas-dir").contains(name)) {
                    throw usage("unknown argument " + name);
                }
                values.put(name, value);
            }
            for (String required : List.of("--bootstrap", "--input", "--output", "--group")) {
                if (!values.containsKey(required)) {
                    throw usage("missing " + required);
                }
            }
            return new Args(values.get("--bootstrap"), values.get("--input"), values.get("--output"),
                    values.get("--group"), values.get("--api-url"), Integer.parseInt(values.get("--batch-size")),
                    Integer.parseInt(values.get("--max-in-flight")), values.get("--schemas-dir"));
        }

        private static IllegalArgumentException usage(String problem) {
            return new IllegalArgumentException(problem + "; usage: --bootstrap B --input T --output T --group G "
                    + "[--api-url URL] [--max-in-flight N] [--batch-size N (unused)] [--schemas-dir DIR]");
        }
    }

    /** The embedded registry: schemas/registry.json's pinned ids and schemas/&lt;dir&gt;/v&lt;n&gt;.avsc. */
    record Registry(Map<Integer, Schema> byId, Map<String, Integer> latestId) {

        static Registry load(Path root) throws IOException {
            JsonNode index = new ObjectMapper().readTree(root.resolve("registry.json").toFile());
            Map<Integer, Schema> byId = new HashMap<>();
            Map<String, Integer> latestId = new HashMap<>();
            for (Iterator<Map.Entry<String, JsonNode>> subjects = index.get("subjects").fields(); subjects.hasNext(); ) {
                Map.Entry<String, JsonNode> subject = subjects.next();
                String directory = subject.getValue().get("directory").asText();
                int latestVersion = -1;
                for (Iterator<Map.Entry<String, JsonNode>> versions = subject.getValue().get("versions").fields();
                     versions.hasNext(); ) {
                    Map.Entry<String, JsonNode> version = versions.next();
                    int number = Integer.parseInt(version.getKey());
                    int id = version.getValue().asInt();
                    String text = Files.readString(root.resolve(directory).resolve("v" + number + ".avsc"));
                    byId.put(id, new Schema.Parser().parse(text)); // a parser each: versions share names
                    if (number > latestVersion) {
                        latestVersion = number;
                        latestId.put(subject.getKey(), id);
                    }
                }
            }
            return new Registry(byId, latestId);
        }

        Schema byId(int id) {
            Schema schema = byId.get(id);
            if (schema == null) {
                throw new IllegalArgumentException("schema id " + id + " is not registered");
            }
            return schema;
        }
    }

    /** B1's enrichment (bench/baselines/common.py Enrichment), with Apache Avro's generic API. */
    static final class Enrichment {
        private final Registry registry;
        private final Schema reader;
        private final Schema output;
        private final int outputId;
        private final Schema customerSchema;
        private final String pipeline;
        private final Map<Integer, GenericDatumReader<GenericRecord>> readers = new ConcurrentHashMap<>();
        private final GenericDatumWriter<GenericRecord> writer;
        private final int[] fromOrder; // per output field: the reader field's position, or -1
        private final Object[] defaults; // per output field not from the order: its schema default
        private final int customerPos;
        private final int enrichedAtPos;
        private final int pipelinePos;
        private final ThreadLocal<BinaryEncoder> encoders = new ThreadLocal<>();

        Enrichment(Registry registry, String pipeline) {
            this.registry = registry;
            this.reader = registry.byId(registry.latestId().get(INPUT_SUBJECT));
            this.outputId = registry.latestId().get(OUTPUT_SUBJECT);
            this.output = registry.byId(outputId);
            this.customerSchema = output.getField("customer").schema();
            this.pipeline = pipeline;
            this.writer = new GenericDatumWriter<>(output);
            List<Schema.Field> fields = output.getFields();
            fromOrder = new int[fields.size()];
            defaults = new Object[fields.size()];
            customerPos = output.getField("customer").pos();
            enrichedAtPos = output.getField("enriched_at").pos();
            pipelinePos = output.getField("pipeline").pos();
            for (Schema.Field field : fields) {
                Schema.Field source = reader.getField(field.name());
                fromOrder[field.pos()] = source == null ? -1 : source.pos();
                boolean set = source != null || field.pos() == customerPos || field.pos() == enrichedAtPos
                        || field.pos() == pipelinePos;
                if (!set) {
                    if (!field.hasDefaultValue()) {
                        throw new IllegalStateException("EnrichedOrder field " + field.name() + " has no default");
                    }
                    defaults[field.pos()] = GenericData.get().getDefaultValue(field);
                }
            }
        }

        GenericRecord decode(byte[] framed) {
            if (framed == null || framed.length < 5 || framed[0] != 0) {
                throw new IllegalArgumentException("not a Confluent-framed Avro record");
            }
            int id = ByteBuffer.wrap(framed, 1, 4).getInt();
            GenericDatumReader<GenericRecord> datumReader =
                    readers.computeIfAbsent(id, key -> new GenericDatumReader<>(registry.byId(key), reader));
            BinaryDecoder decoder = DecoderFactory.get().binaryDecoder(framed, 5, framed.length - 5, null);
            try {
                GenericRecord record = datumReader.read(null, decoder);
                if (!decoder.isEnd()) {
                    throw new IllegalArgumentException("bytes left over after the Avro body of schema id " + id);
                }
                return record;
            } catch (IOException e) {
                throw new IllegalArgumentException("Avro body does not decode under schema id " + id, e);
            }
        }

        byte[] encode(GenericRecord order, JsonObject customer) {
            GenericData.Record joined = new GenericData.Record(customerSchema);
            for (String name : CUSTOMER_FIELDS) {
                Object value = customer.getValue(name);
                if (value == null) {
                    throw new IllegalArgumentException("customer response has no " + name);
                }
                joined.put(name, value.toString());
            }
            GenericData.Record enriched = new GenericData.Record(output);
            for (int pos = 0; pos < fromOrder.length; pos++) {
                enriched.put(pos, fromOrder[pos] >= 0 ? order.get(fromOrder[pos]) : defaults[pos]);
            }
            enriched.put(customerPos, joined);
            enriched.put(enrichedAtPos, System.currentTimeMillis());
            enriched.put(pipelinePos, pipeline);
            ByteArrayOutputStream out = new ByteArrayOutputStream(640);
            out.write(0);
            out.write(outputId >>> 24);
            out.write(outputId >>> 16);
            out.write(outputId >>> 8);
            out.write(outputId);
            BinaryEncoder encoder = EncoderFactory.get().binaryEncoder(out, encoders.get());
            encoders.set(encoder);
            try {
                writer.write(enriched, encoder);
                encoder.flush();
            } catch (IOException e) {
                throw new IllegalStateException("EnrichedOrder does not encode", e);
            }
            return out.toByteArray();
        }
    }
}
