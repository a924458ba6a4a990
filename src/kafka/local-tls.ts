import { spawn, spawnSync } from "node:child_process";
import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { MissingToolError } from "./jars.ts";

/** PEM files of a throwaway certificate authority and what it signed, for a local TLS broker. */
export interface LocalCa {
  dir: string;
  /** The CA certificate (what clients trust). */
  caFile: string;
  caKeyFile: string;
}

export interface LocalCertificate {
  certFile: string;
  /** Unencrypted PKCS#8 private key (what both Kafka's PEM key store and Node read). */
  keyFile: string;
  /** Private key, then the certificate: the single file Kafka's `ssl.keystore.type=PEM` reads. */
  keystoreFile: string;
}

export function assertOpenssl(): void {
  const r = spawnSync("openssl", ["version"], { stdio: "ignore" });
  if (r.error !== undefined || r.status !== 0) {
    throw new MissingToolError(
      "`openssl` was not found: the secure local broker makes its certificates with it (e.g. `apt-get install openssl`).",
    );
  }
}

async function openssl(args: string[], cwd: string): Promise<void> {
  const { code, output } = await new Promise<{ code: number; output: string }>((done, fail) => {
    const child = spawn("openssl", args, { cwd, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (d: Buffer) => {
      output += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      output += d.toString();
    });
    child.on("error", fail);
    child.on("exit", (c) => done({ code: c ?? 1, output }));
  });
  if (code !== 0) throw new Error(`openssl ${args[0]} failed (exit ${code}):\n${output.slice(-2000)}`);
}

const DAYS = "30";

/** A new CA (RSA 2048, valid 30 days) in `dir`, which is created readable by this user only. */
export async function createLocalCa(dir: string, name = "webhook-gateway local Kafka CA"): Promise<LocalCa> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await openssl(
    [
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      "ca.key",
      "-out",
      "ca.pem",
      "-days",
      DAYS,
      "-subj",
      `/CN=${name}`,
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
    ],
    dir,
  );
  await chmod(join(dir, "ca.key"), 0o600);
  return { dir, caFile: join(dir, "ca.pem"), caKeyFile: join(dir, "ca.key") };
}

/**
 * A certificate signed by `ca` for `name` (its common name and the files' base name), valid for TLS
 * servers and clients on localhost and 127.0.0.1.
 */
export async function issueCertificate(ca: LocalCa, name: string): Promise<LocalCertificate> {
  const { dir } = ca;
  const ext = join(dir, `${name}.ext`);
  await writeFile(
    ext,
    [
      "basicConstraints=CA:FALSE",
      "keyUsage=critical,digitalSignature,keyEncipherment",
      "extendedKeyUsage=serverAuth,clientAuth",
      "subjectAltName=DNS:localhost,IP:127.0.0.1",
      "",
    ].join("\n"),
  );
  await openssl(
    [
      "req",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      `${name}.key`,
      "-out",
      `${name}.csr`,
      "-subj",
      `/CN=${name}`,
    ],
    dir,
  );
  await chmod(join(dir, `${name}.key`), 0o600);
  await openssl(
    [
      "x509",
      "-req",
      "-in",
      `${name}.csr`,
      "-CA",
      ca.caFile,
      "-CAkey",
      ca.caKeyFile,
      "-CAcreateserial",
      "-days",
      DAYS,
      "-extfile",
      ext,
      "-out",
      `${name}.pem`,
    ],
    dir,
  );
  const keyFile = join(dir, `${name}.key`);
  const certFile = join(dir, `${name}.pem`);
  const keystoreFile = join(dir, `${name}.keystore.pem`);
  await writeFile(keystoreFile, `${await readFile(keyFile, "utf8")}${await readFile(certFile, "utf8")}`, {
    mode: 0o600,
  });
  return { certFile, keyFile, keystoreFile };
}
