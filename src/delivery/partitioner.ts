import { Partitioners } from "kafkajs";

const partitioner = Partitioners.DefaultPartitioner();
const metadataCache = new Map<number, Array<{ partitionId: number; leader: number }>>();

/**
 * The partition ingest writes a userID's events to (kafkajs's Java-compatible murmur2, as the producer
 * uses): a dead-letter replay of a user's event is delivered by whoever reads that partition.
 */
export function partitionOf(userId: string, partitions: number): number {
  let partitionMetadata = metadataCache.get(partitions);
  if (!partitionMetadata) {
    partitionMetadata = Array.from({ length: partitions }, (_, partitionId) => ({ partitionId, leader: 0 }));
    metadataCache.set(partitions, partitionMetadata);
  }
  return partitioner({
    topic: "",
    partitionMetadata: partitionMetadata as never,
    message: { key: userId, value: null },
  });
}
