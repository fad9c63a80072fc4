"""Write a Hugging Face Llama (the random-weight adversary) as a GGUF file, so llama.cpp runs the very same
weights as torch: the tokenizer metadata is copied from a reference GGUF (the embedded model's), the weights
are stored in float32, and q/k are permuted into llama.cpp's rotary layout as llama.cpp's converter does.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
from transformers import LlamaForCausalLM


def _rope_permute(weight: np.ndarray, heads: int) -> np.ndarray:
    rows = weight.shape[0]
    return (
        weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)
    )


def write_llama_gguf(model: LlamaForCausalLM, tokenizer_gguf: Path, out: Path) -> Path:
    config = model.config
    head_dim = config.hidden_size // config.num_attention_heads
    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(
        float(getattr(config, "rope_theta", None) or config.rope_parameters["rope_theta"])
    )
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    reader = gguf.GGUFReader(str(tokenizer_gguf))
    for key, field in reader.fields.items():
        if key.startswith("tokenizer."):
            value_type = field.types[0]
            sub_type = field.types[1] if value_type == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(key, field.contents(), value_type, sub_type)
    state = {name: tensor.detach().float().numpy() for name, tensor in model.state_dict().items()}
    writer.add_tensor("token_embd.weight", state["model.embed_tokens.weight"])
    writer.add_tensor("output_norm.weight", state["model.norm.weight"])
    for layer in range(config.num_hidden_layers):
        hf, blk = f"model.layers.{layer}.", f"blk.{layer}."
        writer.add_tensor(blk + "attn_norm.weight", state[hf + "input_layernorm.weight"])
        writer.add_tensor(
            blk + "attn_q.weight",
            _rope_permute(state[hf + "self_attn.q_proj.weight"], config.num_attention_heads),
        )
        writer.add_tensor(
            blk + "attn_k.weight",
            _rope_permute(state[hf + "self_attn.k_proj.weight"], config.num_key_value_heads),
        )
        writer.add_tensor(blk + "attn_v.weight", state[hf + "self_attn.v_proj.weight"])
        writer.add_tensor(blk + "attn_output.weight", state[hf + "self_attn.o_proj.weight"])
        writer.add_tensor(blk + "ffn_norm.weight", state[hf + "post_attention_layernorm.weight"])
        writer.add_tensor(blk + "ffn_gate.weight", state[hf + "mlp.gate_proj.weight"])
        writer.add_tensor(blk + "ffn_up.weight", state[hf + "mlp.up_proj.weight"])
        writer.add_tensor(blk + "ffn_down.weight", state[hf + "mlp.down_proj.weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
