#!/usr/bin/env node
// Renders every kustomization under infra/k8s/overlays and validates each object offline:
// - Kubernetes kinds: `kubernetes-validate --strict` (PyPI; bundles the API's JSON schemas, so no
//   network) against Kubernetes K8S_VERSION (default 1.30.0, the oldest with preStop `sleep`);
// - KEDA ScaledObject / TriggerAuthentication: the schema validators of @kubernetes-models/keda,
//   Prometheus Operator PodMonitor / ServiceMonitor: @kubernetes-models/prometheus-operator
//   (npm; generated from the projects' CRD types);
// - a kind none of these knows fails (nothing goes unchecked);
// - cross-object rules: a ScaledObject's target is a Deployment of the same render, and that
//   Deployment sets no `replicas` (else every `kubectl apply` would reset KEDA's scale); every
//   Secret/ConfigMap a pod reads is in the render.
//
//   node infra/k8s/validate.mjs [--kubernetes-validate PATH] [--out DIR]
//
// Needs `kubectl` (its built-in kustomize) on PATH. An overlay's pool.env, when missing, is made
// from overlays/pool.env.example for the render and removed afterwards. Exit 0 when every object
// is valid; 1 with one line per problem otherwise.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, copyFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { parseAllDocuments } from "yaml";
import { ScaledObject, TriggerAuthentication } from "@kubernetes-models/keda/keda.sh/v1alpha1";
import { PodMonitor, ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const here = dirname(fileURLToPath(import.meta.url));
const { values } = parseArgs({
  options: {
    "kubernetes-validate": { type: "string", default: process.env.KUBERNETES_VALIDATE ?? "kubernetes-validate" },
    out: { type: "string" },
  },
});
const k8sVersion = process.env.K8S_VERSION ?? "1.30.0";
const crdModels = {
  "keda.sh/v1alpha1/ScaledObject": ScaledObject,
  "keda.sh/v1alpha1/TriggerAuthentication": TriggerAuthentication,
  "monitoring.coreos.com/v1/PodMonitor": PodMonitor,
  "monitoring.coreos.com/v1/ServiceMonitor": ServiceMonitor,
};
const problems = [];
const outDir = values.out ?? mkdtempSync(join(tmpdir(), "nest-k8s-"));
mkdirSync(outDir, { recursive: true });

const overlaysDir = join(here, "overlays");
const overlays = readdirSync(overlaysDir, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name).sort();
let objects = 0;
for (const name of overlays) {
  const dir = join(overlaysDir, name);
  const madeEnv = [];
  // The overlay and the ones it builds on may need a pool.env: made from the example, then removed.
  for (const d of [dir, ...overlays.map((o) => join(overlaysDir, o))]) {
    const env = join(d, "pool.env");
    if (existsSync(join(d, "kustomization.yaml")) && !existsSync(env)) {
      copyFileSync(join(overlaysDir, "pool.env.example"), env);
      madeEnv.push(env);
    }
  }
  let rendered;
  try {
    rendered = execFileSync("kubectl", ["kustomize", dir], { encoding: "utf8" });
  } catch (err) {
    problems.push(`${name}: kustomize failed: ${err.stderr ?? err.message}`);
    continue;
  } finally {
    for (const env of madeEnv) rmSync(env);
  }
  const docs = parseAllDocuments(rendered).map((d) => d.toJS()).filter((d) => d);
  objects += docs.length;
  const coreFile = join(outDir, `${name}.core.yaml`);
  writeFileSync(join(outDir, `${name}.yaml`), rendered);
  const core = [];
  for (const doc of docs) {
    const id = `${name}: ${doc.kind}/${doc.metadata?.name}`;
    const model = crdModels[`${doc.apiVersion}/${doc.kind}`];
    if (model) {
      try {
        new model(doc).validate();
      } catch (err) {
        problems.push(`${id}: ${err.message}`);
      }
    } else if (doc.apiVersion?.includes(".") && !/(^|\.)k8s\.io\//.test(doc.apiVersion) && !doc.apiVersion.startsWith("apps/") && !doc.apiVersion.startsWith("policy/") && !doc.apiVersion.startsWith("autoscaling/") && !doc.apiVersion.startsWith("batch/")) {
      problems.push(`${id}: no schema for ${doc.apiVersion} ${doc.kind} (add its validator to infra/k8s/validate.mjs)`);
    } else {
      core.push(doc);
    }
  }
  writeFileSync(coreFile, core.map((d) => JSON.stringify(d)).join("\n---\n") + "\n");
  try {
    const out = execFileSync(values["kubernetes-validate"], ["--strict", "-k", k8sVersion, coreFile], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
    for (const line of out.split("\n")) if (/WARN|ERROR/i.test(line)) problems.push(`${name}: ${line.trim()}`);
  } catch (err) {
    const text = `${err.stdout ?? ""}${err.stderr ?? ""}`.trim() || err.message;
    const bad = text.split("\n").filter((l) => /WARN|ERROR/i.test(l));
    for (const line of bad.length ? bad : [text]) problems.push(`${name}: ${line.trim()}`);
  }
  crossChecks(name, docs);
  console.log(`${name}: ${docs.length} objects (${core.length} Kubernetes, ${docs.length - core.length} CRD) → ${join(outDir, `${name}.yaml`)}`);
}

function crossChecks(name, docs) {
  const byKind = (kind) => docs.filter((d) => d.kind === kind);
  const names = (kind) => new Set(byKind(kind).map((d) => d.metadata.name));
  const deployments = new Map(byKind("Deployment").map((d) => [d.metadata.name, d]));
  for (const so of byKind("ScaledObject")) {
    const ref = so.spec.scaleTargetRef;
    const target = (ref.kind ?? "Deployment") === "Deployment" ? deployments.get(ref.name) : undefined;
    if (!target) problems.push(`${name}: ScaledObject/${so.metadata.name} targets ${ref.kind ?? "Deployment"}/${ref.name}, not in the render`);
    else if (target.spec.replicas !== undefined) problems.push(`${name}: Deployment/${ref.name} is scaled by KEDA but sets spec.replicas`);
  }
  const secrets = names("Secret");
  const configMaps = names("ConfigMap");
  for (const dep of deployments.values()) {
    const pod = dep.spec.template.spec;
    for (const c of [...(pod.containers ?? []), ...(pod.initContainers ?? [])]) {
      const refs = [
        ...(c.envFrom ?? []).map((e) => e.secretRef ? ["Secret", e.secretRef.name, e.secretRef.optional] : ["ConfigMap", e.configMapRef?.name, e.configMapRef?.optional]),
        ...(c.env ?? []).flatMap((e) => e.valueFrom?.secretKeyRef ? [["Secret", e.valueFrom.secretKeyRef.name, e.valueFrom.secretKeyRef.optional]] : e.valueFrom?.configMapKeyRef ? [["ConfigMap", e.valueFrom.configMapKeyRef.name, e.valueFrom.configMapKeyRef.optional]] : []),
      ];
      for (const [kind, ref, optional] of refs) {
        if (optional || ref === "cloudflared") continue; // created by hand (docs/deploy.md)
        if (!(kind === "Secret" ? secrets : configMaps).has(ref)) problems.push(`${name}: Deployment/${dep.metadata.name} reads ${kind}/${ref}, not in the render`);
      }
      const grace = pod.terminationGracePeriodSeconds ?? 30;
      const sleep = c.lifecycle?.preStop?.sleep?.seconds ?? 0;
      if (sleep >= grace) problems.push(`${name}: Deployment/${dep.metadata.name}: preStop sleep ${sleep}s leaves no drain time in a ${grace}s grace period`);
    }
  }
}

for (const p of problems) console.error(p);
console.log(`${overlays.length} overlays, ${objects} objects: ${problems.length === 0 ? "all valid" : `${problems.length} problem(s)`}`);
process.exit(problems.length === 0 ? 0 : 1);
