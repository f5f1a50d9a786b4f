/**
 * @module eval/variants
 * The decoding configurations of one evaluation run: the requested modes, an optional γ sweep of
 * `nest` (paper Figure 2b) and the ablation of paper Table 3. Identical configurations run once
 * (e.g. the ablation's last row is plain `nest`).
 */
import { ModeSchema, resolveGamma, type Mode } from "@nest/shared/protocol/request";
import type { Variant } from "./runner.ts";

/** Ablation rows (paper Table 3) → the configuration each one runs. */
export const ABLATION: ReadonlyArray<{ label: string; mode: Mode; params: Record<string, number | string> }> = [
  // Fixed λ (request `lambda`, default 0.7), token by token (spec §9).
  { label: "kNN-LM (two-stage, fixed λ)", mode: "knnlm", params: {} },
  // λ from RRC; δ = 0 never enters span mode (λ = sigmoid(·) > 0), so every token is chosen singly.
  { label: "+ RRC", mode: "nest", params: { delta: 0 } },
  // Spans drafted and verified exactly: only argmax-p_M tokens are accepted.
  { label: "+ dynamic span selection", mode: "nest", params: { acceptance: "greedy" } },
  { label: "+ relaxed speculative decoding (NEST)", mode: "nest", params: {} },
];

/** What to run. `params` apply to every variant (e.g. `alpha=0.3`); sweep/ablation params win over them. */
export interface VariantPlan {
  modes: readonly Mode[];
  params: Record<string, number | string>;
  gammas?: readonly number[];
  ablation?: boolean;
}

/** The variants to run plus, per report section, the variant name of each row. */
export interface PlannedVariants {
  variants: Variant[];
  modes: string[];
  gamma: Array<{ gamma: number; variant: string }>;
  ablation: Array<{ label: string; variant: string }>;
}

const key = (mode: Mode, params: Record<string, number | string>) =>
  `${mode}|${JSON.stringify(Object.entries(params).sort(([a], [b]) => a.localeCompare(b)))}`;

/** Expands a plan into unique variants (see module doc). Mode variants are named after the mode. */
export function planVariants(plan: VariantPlan): PlannedVariants {
  const variants: Variant[] = [];
  const byKey = new Map<string, string>();
  const add = (name: string, mode: Mode, extra: Record<string, number | string>): string => {
    const params = { ...plan.params, ...extra };
    // γ only matters in nest modes; normalise the default so `nest` and `γ=5e-4` coincide.
    if (mode === "nest" || mode === "rag-nest") params.gamma ??= resolveGamma({ mode, gamma: undefined });
    const k = key(mode, params);
    const existing = byKey.get(k);
    if (existing) return existing;
    variants.push({ name, mode, params });
    byKey.set(k, name);
    return name;
  };
  const modes = plan.modes.map((m) => add(ModeSchema.parse(m), m, {}));
  const gamma = (plan.gammas ?? []).map((g) => ({ gamma: g, variant: add(`nest γ=${g.toExponential(0)}`, "nest", { gamma: g }) }));
  const ablation = plan.ablation ? ABLATION.map((a) => ({ label: a.label, variant: add(`abl ${a.label}`, a.mode, a.params) })) : [];
  return { variants, modes, gamma, ablation };
}
