"""The recurrent encoder-decoder family `rnn_seq2seq`: translation before the Transformer.

Encoder: the `rnn` family's bidirectional LSTM/GRU stack (`rnn.RnnEncoder`, its cells and
recurrence) over the shared word embedding; its outputs projected to `hidden_size` are the memory
`encoder_output` [B, S, H]. Decoder: `decoder_layers` unidirectional cells of width H whose
states start from a projection of the encoder's final states (tanh(W [fwd; bwd]); an LSTM's
cell state starts at 0). At step t the decoder reads the previous target token's embedding and
the previous attentional vector (Luong's input feeding), runs its cells, and with attention
scores its top state q against every memory vector m_s:

  `additive` (Bahdanau)  v . tanh(W_q q + W_k m_s)
  `dot` (Luong)          q . m_s
  `general` (Luong)      q . W m_s

softmaxed over the real source tokens into weights a_ts (`cross_attention`), context
c_t = sum_s a_ts m_s, and attentional vector tanh(W_c [c_t; q]) (`sequence_output`, what the
"lm" head maps to the vocabulary). `attention="none"` is the bottleneck model: the decoder sees
the source only through its initial state, and the vector is tanh(W_c q).

One step function serves training (teacher forcing: a scan over the target shifted right) and
decoding (the seq2seq protocol, `SEQ2SEQ` calls below): called without `input_ids` it continues
from the "cache" collection (h, c, the input-feeding vector and a step counter; at step 0 the
state comes from the memory), so step-by-step logits equal the teacher-forced ones.

Logical axes: those of `rnn.py` (vocab, embed, rnn_in, rnn_gates, rnn_hidden, rnn_state);
activations act_batch, act_length, act_embed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bertjax.models.bert import DTYPES
from bertjax.models.layers import word_embedding
from bertjax.models.registry import Family, check_positive, fail, register
from bertjax.models.rnn import ACT, CELL_FNS, CELLS, RnnConfig, RnnEncoder

Array = jax.Array
ATTENTIONS = ("none", "additive", "dot", "general")
INPUT_FIELDS = ("input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask")


@dataclasses.dataclass(frozen=True)
class RnnSeq2SeqConfig:
    """Architecture and numerics of the recurrent encoder-decoder (`config.model`)."""

    vocab_size: int = 8000  # one vocabulary shared by source and target
    hidden_size: int = 256  # decoder state, memory, attention and attentional vector width
    cell: str = "lstm"  # "lstm" or "gru", encoder and decoder
    num_layers: int = 1  # bidirectional encoder layers
    decoder_layers: int = 1  # unidirectional decoder layers
    rnn_size: int = 256  # encoder state per direction
    embedding_size: int = 256  # the word embedding shared by encoder and decoder
    attention: str = "additive"  # "none" (bottleneck), "additive", "dot" or "general"
    hidden_dropout: float = 0.1  # embeddings, between encoder layers, before the output layer
    eos_token_id: int = 0  # </s>; set from the tokenizer
    dtype: str = "float32"  # compute dtype of the matmuls
    param_dtype: str = "float32"  # storage dtype

    @property
    def num_gates(self) -> int:
        return CELLS[self.cell]

    @property
    def encoder(self) -> RnnConfig:
        """The `rnn` family config of the encoder stack."""
        return RnnConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            cell=self.cell,
            num_layers=self.num_layers,
            rnn_size=self.rnn_size,
            type_vocab_size=0,
            embedding_size=self.embedding_size,
            hidden_dropout=self.hidden_dropout,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )

    def __post_init__(self):
        check_positive(
            self,
            ("vocab_size", "hidden_size", "num_layers", "decoder_layers", "rnn_size"),
        )
        check_positive(self, ("embedding_size",))
        if self.cell not in CELLS:
            fail("cell", self.cell, f"allowed values are {tuple(CELLS)}")
        if self.attention not in ATTENTIONS:
            fail("attention", self.attention, f"allowed values are {ATTENTIONS}")
        if not 0.0 <= self.hidden_dropout < 1.0:
            fail("hidden_dropout", self.hidden_dropout, "must be in [0, 1)")
        for name in ("dtype", "param_dtype"):
            if getattr(self, name) not in DTYPES:
                fail(name, getattr(self, name), f"allowed values are {DTYPES}")
        if not 0 <= self.eos_token_id < self.vocab_size:
            fail("eos_token_id", self.eos_token_id, f"must be in [0, {self.vocab_size})")


def _dense(cfg: RnnSeq2SeqConfig, features: int, names: tuple[str, str], name: str, bias=True):
    """A dense layer with LeCun-normal kernels (variance 1 / fan_in, as torch's nn.Linear in
    scale), so activations stay of order 1 through the stack: small kernels (BERT's 0.02) give
    additive attention gradients below Adam's epsilon and the model learns nothing."""
    return nn.Dense(
        features,
        use_bias=bias,
        dtype=cfg.dtype,
        param_dtype=cfg.param_dtype,
        kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), names),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), names[1:]),
        name=name,
    )


class DecoderStep(nn.Module):
    """One decoder step: cells, attention and the attentional vector (scanned over time).

    Parameters: `layer_k` {w_ih [in, gates, H], w_hh [H, gates, H], b_ih, b_hh [gates, H]}
    (in = embedding + H for layer 0, H above), the attention's (`query` [H, H] and `score` [H]
    for additive, `general` [H, H]) and `combine` [H or 2H, H].
    """

    config: RnnSeq2SeqConfig

    def _cell(self, k: int, x: Array, carry: tuple[Array, ...]) -> tuple[Array, ...]:
        """Layer k's cell on input x [B, in] from carry (h[, c]) [B, H] (float32)."""
        cfg, g, h = self.config, self.config.num_gates, self.config.hidden_size
        shapes = {
            "w_ih": ((x.shape[-1], g, h), ("rnn_in", "rnn_gates", "rnn_hidden")),
            "w_hh": ((h, g, h), ("rnn_state", "rnn_gates", "rnn_hidden")),
            "b_ih": ((g, h), ("rnn_gates", "rnn_hidden")),
            "b_hh": ((g, h), ("rnn_gates", "rnn_hidden")),
        }
        p = {
            key: self.param(f"layer_{k}_{key}", _uniform(h, names), shape, cfg.param_dtype)
            for key, (shape, names) in shapes.items()
        }
        as_dtype = lambda a: jnp.asarray(a, cfg.dtype)
        f32 = jnp.float32
        xg = jnp.einsum("bi,igr->bgr", as_dtype(x), as_dtype(p["w_ih"]), preferred_element_type=f32)
        hg = jnp.einsum(
            "bs,sgr->bgr", as_dtype(carry[0]), as_dtype(p["w_hh"]), preferred_element_type=f32
        )
        return CELL_FNS[cfg.cell](carry, xg + p["b_ih"].astype(f32), hg + p["b_hh"].astype(f32))

    def _attend(self, query: Array, memory: Array, keys: Array, mask: Array) -> Array:
        """Weights [B, S] (float32, 0 on padding) of query [B, H] over memory [B, S, H]."""
        cfg = self.config
        if cfg.attention == "additive":
            q = _dense(cfg, cfg.hidden_size, ("rnn_in", "rnn_hidden"), "query", bias=False)(query)
            v = self.param(
                "score",
                nn.with_logical_partitioning(
                    nn.initializers.normal(cfg.hidden_size**-0.5), ("rnn_hidden",)
                ),
                (cfg.hidden_size,),
                cfg.param_dtype,
            )
            hidden = jnp.tanh(keys.astype(jnp.float32) + q[:, None].astype(jnp.float32))
            scores = hidden @ v.astype(jnp.float32)
        else:
            if cfg.attention == "general":
                query = _dense(cfg, cfg.hidden_size, ("rnn_in", "rnn_hidden"), "general", False)(
                    query
                )
            scores = jnp.einsum("bh,bsh->bs", query.astype(jnp.float32), memory.astype(jnp.float32))
        scores = jnp.where(mask > 0, scores, -1e9)
        return jax.nn.softmax(scores, axis=-1) * (mask > 0)

    @nn.compact
    def __call__(self, carry: dict, embedded: Array, memory: Array, keys: Array, mask: Array):
        """carry {"h": [B, L, H] (and "c" for LSTM), "feed": [B, H]}, embedded [B, E] ->
        (carry, (attentional vector [B, H], weights [B, S] or None))."""
        cfg = self.config
        x = jnp.concatenate([embedded.astype(jnp.float32), carry["feed"]], axis=-1)
        new_h, new_c = [], []
        for k in range(cfg.decoder_layers):
            state = (
                (carry["h"][:, k], carry["c"][:, k]) if cfg.cell == "lstm" else (carry["h"][:, k],)
            )
            state = self._cell(k, x, state)
            new_h.append(state[0])
            if cfg.cell == "lstm":
                new_c.append(state[1])
            x = state[0]
        weights = None
        combine = _dense(cfg, cfg.hidden_size, ("rnn_in", "embed"), "combine")
        if cfg.attention == "none":
            vector = jnp.tanh(combine(x).astype(jnp.float32))
        else:
            weights = self._attend(x, memory, keys, mask)
            context = jnp.einsum("bs,bsh->bh", weights, memory.astype(jnp.float32))
            vector = jnp.tanh(combine(jnp.concatenate([context, x], -1)).astype(jnp.float32))
        out = {"h": jnp.stack(new_h, axis=1), "feed": vector}
        if cfg.cell == "lstm":
            out["c"] = jnp.stack(new_c, axis=1)
        return out, (vector, weights)


def _uniform(size: int, names: tuple[str, ...]):
    """torch's recurrent init U(-1/sqrt(size), 1/sqrt(size))."""
    limit = size**-0.5

    def init(key, shape, dtype):
        return jax.random.uniform(key, shape, dtype, -limit, limit)

    return nn.with_logical_partitioning(init, names)


ScanStep = nn.scan(
    DecoderStep,
    variable_broadcast="params",
    split_rngs={"params": False},
    in_axes=(1, nn.broadcast, nn.broadcast, nn.broadcast),
    out_axes=1,
)


class RnnSeq2SeqBackbone(nn.Module):
    """Encoder, initial state and the scanned decoder; see the module for the three calls."""

    config: RnnSeq2SeqConfig

    def _encode(self, inputs, embed: nn.Embed, deterministic: bool) -> dict[str, Array]:
        cfg = self.config
        x = nn.Dropout(cfg.hidden_dropout)(embed(inputs["input_ids"]), deterministic=deterministic)
        outputs, final = RnnEncoder(cfg.encoder, name="encoder")(
            nn.with_logical_constraint(x, ACT),
            inputs["attention_mask"],
            deterministic=deterministic,
        )
        memory = _dense(cfg, cfg.hidden_size, ("rnn_in", "embed"), "memory")(outputs)
        return {
            "encoder_output": nn.with_logical_constraint(memory, ACT),
            "encoder_final": jnp.asarray(final, jnp.float32),
        }

    def _initial(self, final: Array) -> dict[str, Array]:
        """The decoder's state at step 0 from the encoder's final states [B, 2 * rnn]."""
        cfg = self.config
        batch, layers, h = final.shape[0], cfg.decoder_layers, cfg.hidden_size
        init = _dense(cfg, layers * h, ("rnn_in", "rnn_hidden"), "initial_state")(final)
        hidden = jnp.tanh(init.astype(jnp.float32)).reshape(batch, layers, h)
        carry = {"h": hidden, "feed": jnp.zeros((batch, h), jnp.float32)}
        if cfg.cell == "lstm":
            carry["c"] = jnp.zeros_like(hidden)
        return carry

    def _keys(self, memory: Array) -> Array:
        """Additive attention's W_k m_s [B, S, H], once per source (else memory itself)."""
        cfg = self.config
        if cfg.attention != "additive":
            return memory
        return _dense(cfg, cfg.hidden_size, ("rnn_in", "rnn_hidden"), "keys", bias=False)(memory)

    def _cached(self, start: dict[str, Array]) -> tuple[dict, Any]:
        """The carry the "cache" holds (the memory's initial state at step 0), and the cache
        variables to write the new carry to."""
        index = self.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
        cache = {k: self.variable("cache", k, jnp.zeros_like, v) for k, v in start.items()}
        first = index.value == 0
        carry = {k: jnp.where(first, start[k], cache[k].value) for k in start}
        return carry, (index, cache)

    @nn.compact
    def __call__(self, inputs: Mapping[str, Array], *, deterministic: bool = True) -> dict:
        """Runs the model (the seq2seq protocol's three calls).

        Args:
          inputs: teacher forcing: input_ids, attention_mask [B, S], decoder_input_ids,
            decoder_attention_mask [B, T]; encode only: input_ids, attention_mask; one decode
            step (continuing the "cache"): encoder_output [B, S, H], encoder_final
            [B, 2 * rnn_size], attention_mask [B, S] and decoder_input_ids [B, T].
          deterministic: False enables dropout (needs a "dropout" rng).

        Returns:
          encode only: `encoder_output`, `encoder_final`; otherwise `sequence_output` [B, T, H]
          (attentional vectors) and, with attention, `cross_attention` [B, T, S] (float32).
        """
        cfg = self.config
        # torch's N(0, 1)
        embed = word_embedding(cfg, "word_embeddings", features=cfg.embedding_size, stddev=1.0)
        if "input_ids" in inputs:
            memory = self._encode(inputs, embed, deterministic)
            if "decoder_input_ids" not in inputs:
                return memory
        else:
            memory = {k: inputs[k] for k in ("encoder_output", "encoder_final")}
        start = self._initial(memory["encoder_final"])
        decoding = "input_ids" not in inputs
        carry, cache = self._cached(start) if decoding else (start, None)
        y = embed(inputs["decoder_input_ids"])
        y = nn.Dropout(cfg.hidden_dropout)(y, deterministic=deterministic)
        mask = inputs["attention_mask"]
        encoder_output = memory["encoder_output"]
        carry, (vectors, weights) = ScanStep(cfg, name="decoder")(
            carry, y, encoder_output, self._keys(encoder_output), mask
        )
        if decoding:
            index, variables = cache
            for key, variable in variables.items():
                variable.value = carry[key]
            index.value = index.value + y.shape[1]
        out = {"sequence_output": nn.with_logical_constraint(vectors.astype(cfg.dtype), ACT)}
        if weights is not None:
            out["cross_attention"] = weights
        return out


class LmHead(nn.Module):
    """The output layer: dropout, then the attentional vectors to vocabulary logits."""

    config: RnnSeq2SeqConfig

    @nn.compact
    def __call__(self, features, inputs, *, deterministic: bool) -> dict[str, Array]:
        """Returns `lm_logits`, float32 [B, T, vocab]."""
        cfg = self.config
        x = nn.Dropout(cfg.hidden_dropout)(features["sequence_output"], deterministic=deterministic)
        logits = _dense(cfg, cfg.vocab_size, ("embed", "vocab"), "output")(x)
        return {"lm_logits": logits.astype(jnp.float32)}


def forward_flops_per_sequence(cfg: RnnSeq2SeqConfig, seq_len: int) -> float:
    """Matmul FLOPs of one forward pass with source and target of `seq_len` tokens each:
    the encoder (as `rnn`), the memory projection, and per target token the decoder cells,
    the attention (scores and context over the source) and the attentional vector. The output
    layer is the objective's."""
    g, r, h, e = cfg.num_gates, cfg.rnn_size, cfg.hidden_size, cfg.embedding_size
    encoder = 0
    for k in range(cfg.num_layers):
        features = e if k == 0 else 2 * r
        encoder += 2 * 2 * g * r * (features + r)
    decoder = sum(2 * g * h * ((e + h if k == 0 else h) + h) for k in range(cfg.decoder_layers))
    attention = 0 if cfg.attention == "none" else 4 * seq_len * h + 2 * h * h
    combine = 2 * (h if cfg.attention == "none" else 2 * h) * h
    per_source = encoder + 2 * 2 * r * h + (2 * h * h if cfg.attention == "additive" else 0)
    return float(seq_len * (per_source + decoder + attention + combine))


RNN_SEQ2SEQ = register(
    Family(
        name="rnn_seq2seq",
        config_cls=RnnSeq2SeqConfig,
        backbone=RnnSeq2SeqBackbone,
        heads={"lm": LmHead},
        input_fields=INPUT_FIELDS,
        forward_flops=forward_flops_per_sequence,
        stack_paths=(),
        pretraining_heads=("lm",),
        defaults={
            "objective": "seq2seq",
            "data.tokenizer": "sentencepiece",
            "data.instances": "parallel_pairs",
            "data.lowercase": False,
        },
        next_steps=(
            (
                "Translate with it (greedy, or --beam 4):",
                'bertjax translate {model} --text "비행기가 이륙하고 있다."',
            ),
        ),
    )
)
