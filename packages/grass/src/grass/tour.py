"""grass's part of the effml tour: the layer-wise optimizer against torch AdamW, then GRASS on SmolLM2."""

from __future__ import annotations

__all__ = ["demo"]


def demo(*, quick: bool = False) -> list[dict]:
    """LayerwiseAdamW with every layer active equals torch AdamW bit for bit (layer-wise offload on);
    a few GRASS steps on SmolLM2-135M and GSM8K: probing, the sampled layers, optimizer state on the
    device against on the host."""
    from effcore.tour import TourSteps

    step = TourSteps("grass")

    def exact() -> str:
        import torch

        from effcore.testing.tiny import tiny_model
        from grass.layers import layer_map
        from grass.optimizer import LayerwiseAdamW

        ref, ours = (
            tiny_model("llama", num_hidden_layers=4).train(),
            tiny_model("llama", num_hidden_layers=4).train(),
        )
        units = {f"layer{i}": [p for _, p in ps] for i, ps in enumerate(layer_map(ours).layers)}
        units["embed_head"] = [p for _, p in layer_map(ours).embed_head]
        opt_ref = torch.optim.AdamW(ref.parameters(), lr=1e-3)
        opt = LayerwiseAdamW(units, lr=1e-3, offload="layerwise")
        ids = torch.randint(3, 128, (2, 16), generator=torch.Generator().manual_seed(0))
        for net, o in ((ref, opt_ref), (ours, opt)):
            for _ in range(3):
                net(input_ids=ids, labels=ids).loss.backward()
                o.step()
                o.zero_grad()
        same = all(torch.equal(a, b) for a, b in zip(ref.parameters(), ours.parameters(), strict=True))
        return f"3 steps, state streamed layer by layer from the host: bitwise equal to torch AdamW: {same}"

    def grass_run() -> str:
        from grass.config import RunConfig
        from grass.train import run

        steps = 4 if quick else 8
        cfg = RunConfig(method="grass", steps=steps, batch=2, seq_len=160, probe_steps=2, sample_period=3,
                        update_period=3, lr=1e-4, train_limit=64)  # fmt: skip
        r = run(cfg, device="auto", eval_limit=8, measure_memory=False, eval_before=True)
        s = r.summary
        active = " ".join(row["active"] for row in r.rows)
        return (f"SmolLM2 GSM8K, {steps} steps (active per step: {active}); held-out answer loss on 8 test "
                f"problems {s['eval_before']['loss']:.3f} -> {s['eval']['loss']:.3f}; optimizer state on device {s['optimizer_state_device_peak'] / 2**20:.0f} MiB "
                f"at most, on host {s['optimizer_state_host'] / 2**20:.0f} MiB")  # fmt: skip

    step("LayerwiseAdamW equals torch AdamW (all layers active)", exact)
    step("GRASS on SmolLM2-135M / GSM8K", grass_run)
    return step.rows
