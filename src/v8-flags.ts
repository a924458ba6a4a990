/**
 * V8 settings of the gateway process. main.ts imports this module first, so they hold before any other
 * module runs.
 *
 * Allocation-site pretenuring is off. With it, V8 watches where objects are made (object and array
 * literals) and allocates straight into the old generation from any site whose objects were all still
 * alive at a scavenge. On the ingest path that decision is a coin toss at start-up: a group-commit batch and
 * its Kafka request live for a few milliseconds, and whether a scavenge happened to find them alive
 * depends on the warm-up. Once such a site is tenured, each dead old object keeps the young objects it
 * points to (the requests waiting on the batch) alive through every scavenge until the next full
 * collection. Measured at 5,000 events/s on one core (bench/README.md, session 15): then 8–9.5 MB survived
 * each scavenge instead of 2.2–3.5 MB, scavenges took 17–28 ms instead of 5–9 ms, and the process used
 * about a sixth more CPU. It happened in 5 of 23 runs with pretenuring and in none of 18 without.
 */
import { setFlagsFromString } from "node:v8";

setFlagsFromString("--no-allocation-site-pretenuring");
