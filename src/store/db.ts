import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import Database from "better-sqlite3";
import { type BetterSQLite3Database, drizzle } from "drizzle-orm/better-sqlite3";
import { migrate } from "drizzle-orm/better-sqlite3/migrator";
import * as schema from "./schema.ts";

export type Db = BetterSQLite3Database<typeof schema> & { $client: Database.Database };

export interface Store {
  db: Db;
  sqlite: Database.Database;
  close(): void;
}

const MIGRATIONS = resolve(dirname(fileURLToPath(import.meta.url)), "../../drizzle");

/**
 * Opens (creating if needed) the SQLite file, switches it to WAL and applies the committed migrations
 * (unless `migrate: false`).
 * better-sqlite3 is synchronous: every store function runs to completion without awaiting, so no
 * transaction can ever be held open across network I/O.
 */
export function openStore(path: string, opts: { migrate?: boolean } = {}): Store {
  if (path !== ":memory:") mkdirSync(dirname(resolve(path)), { recursive: true });
  const sqlite = new Database(path);
  sqlite.pragma("journal_mode = WAL");
  // NORMAL in WAL mode survives a process crash (only an OS crash can lose the last commits).
  sqlite.pragma("synchronous = NORMAL");
  sqlite.pragma("busy_timeout = 5000");
  sqlite.pragma("foreign_keys = ON");
  const db = drizzle(sqlite, { schema });
  // Delivery threads open the file after the main thread migrated it.
  if (opts.migrate !== false) migrate(db, { migrationsFolder: MIGRATIONS });
  return {
    db,
    sqlite,
    close() {
      if (sqlite.open) sqlite.close();
    },
  };
}

/**
 * `prepare(db)` run once per database, then reused: building a hot query with drizzle and compiling it in
 * SQLite on every call cost several times the write itself (bench/delivery.ts profile).
 */
export function preparedPerDb<T>(prepare: (db: Db) => T): (db: Db) => T {
  const cache = new WeakMap<Db, T>();
  return (db) => {
    let statement = cache.get(db);
    if (statement === undefined) {
      statement = prepare(db);
      cache.set(db, statement);
    }
    return statement;
  };
}

/** True when the database answers a trivial query (readiness). */
export function isStoreHealthy(store: Store): boolean {
  try {
    return store.sqlite.open && store.sqlite.prepare("select 1 as ok").get() !== undefined;
  } catch {
    return false;
  }
}
