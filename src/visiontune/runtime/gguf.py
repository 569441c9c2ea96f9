"""`GgufVLM`: a GGUF export (`visiontune export --format gguf`) run by llama.cpp, through llama-cpp-python's
bindings and its multimodal library (mtmd), without torch.

Reads the export folder: `NAME-{f16,q8_0,...}.gguf` (the language model) and `mmproj-NAME-f16.gguf` (the
vision encoder and projector). Prompts are rendered with the chat template embedded in the GGUF, the
template's image token replaced by mtmd's media marker; mtmd then splits and encodes the image and writes its
tokens as the model's processor does (tiles with their `<row_i_col_j>` markers, the global image). One prompt
at a time: llama.cpp's context holds one sequence here.
"""

from __future__ import annotations

import atexit
import codecs
import ctypes
import weakref
from pathlib import Path
from typing import Callable

import numpy as np

from .chat import answer_suffix, render_chat
from .vlm import choose_tokens, log_softmax

PROJECTOR_PREFIX = "mmproj-"
INSTALL_HINT = ("running a GGUF export needs llama-cpp-python with its multimodal library: pip install "
                "'visiontune[llama-cpp]' (pip builds llama.cpp from source: about 6 min on 2 cores)")


def gguf_export_files(path: str | Path, variant: str = "auto") -> tuple[Path, Path] | None:
    """(language model file, projector file) for a GGUF export folder or one of its language model files, else
    None. `variant` (f16, q8_0, ... as in NAME-VARIANT.gguf) picks among a folder's files; auto: f16 if there."""
    path = Path(path)
    if path.is_file() and path.suffix == ".gguf" and not path.name.startswith(PROJECTOR_PREFIX):
        root, texts = path.parent, [path]
    elif path.is_dir():
        root = path
        texts = sorted(p for p in path.glob("*.gguf") if not p.name.startswith(PROJECTOR_PREFIX))
    else:
        return None
    projectors = sorted(root.glob(f"{PROJECTOR_PREFIX}*.gguf"))
    if not texts:
        return None
    if len(projectors) != 1:
        raise FileNotFoundError(f"{root}: {len(projectors)} {PROJECTOR_PREFIX}*.gguf files beside the language model; "
                                f"a GGUF export holds exactly one (make one with visiontune export --format gguf)")
    if path.is_file():
        return path, projectors[0]
    variants = {p.stem.rsplit("-", 1)[-1]: p for p in texts}
    wanted = "f16" if variant == "auto" and "f16" in variants else variant
    if wanted == "auto" and len(texts) == 1:
        return texts[0], projectors[0]
    if wanted not in variants:
        raise ValueError(f"{root}: no {wanted} GGUF; this export has {', '.join(sorted(variants))} (pick one with "
                         f"--dtype, or pass the .gguf file)")
    return variants[wanted], projectors[0]


class GgufVLM:
    """The runtime side of the predictor contract (`ExportPredictor` wraps it): generation, each token's text,
    answers' tokens and log-likelihoods."""

    name = "llama.cpp"

    def __init__(self, text_file: str | Path, projector_file: str | Path, threads: int | None = None,
                 batch: int = 2048):
        try:
            import llama_cpp
            import llama_cpp.mtmd_cpp as mtmd
            from llama_cpp._logger import llama_log_callback
        except ImportError as error:
            raise ModuleNotFoundError(INSTALL_HINT) from error
        self.text_file, self.projector_file = Path(text_file), Path(projector_file)
        self._llama_cpp, self._mtmd = llama_cpp, mtmd
        # the vision side logs through llama-cpp-python's logger too: errors only unless it is verbose
        mtmd.mtmd_log_set(llama_log_callback, None)
        mtmd.mtmd_helper_log_set(llama_log_callback, None)
        # n_ctx 0: the model's own context length; a prompt (image tokens included) is evaluated in one batch;
        # every layer and the vision encoder on the GPU when llama.cpp was built for one
        gpu = bool(llama_cpp.llama_supports_gpu_offload())
        self.llama = llama_cpp.Llama(model_path=str(text_file), n_ctx=0, n_batch=batch, n_ubatch=batch,
                                     n_threads=threads, n_gpu_layers=-1 if gpu else 0, verbose=False)
        llama = weakref.ref(self.llama)  # closed before the interpreter tears down the bindings it frees with
        atexit.register(lambda: llama() is not None and llama().close())
        parameters = mtmd.mtmd_context_params_default()
        parameters.use_gpu, parameters.print_timings, parameters.warmup = gpu, False, False
        parameters.n_threads = self.llama.n_threads
        self.mtmd_context = mtmd.mtmd_init_from_file(str(projector_file).encode(), self.llama.model, parameters)
        if not self.mtmd_context:
            raise ValueError(f"{projector_file}: llama.cpp could not load this projector (mmproj) with "
                             f"{self.text_file.name}")
        self.llama._stack.callback(mtmd.mtmd_free, self.mtmd_context)
        self.media_marker = mtmd.mtmd_default_marker().decode()
        metadata = self.llama.metadata
        if "tokenizer.chat_template" not in metadata:
            raise ValueError(f"{text_file}: no chat template in the GGUF; export it again with visiontune export "
                             f"--format gguf")
        self.chat_template = metadata["tokenizer.chat_template"]
        self.image_token = "<image>"  # the idefics3 family's placeholder (the family GGUF export takes)
        self.end_ids = {self.llama.token_eos()} | {token for token in (self.llama._model.token_eot(),) if token >= 0}

    # --- text ---------------------------------------------------------------------------------------------
    def render(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        return render_chat(self.chat_template, messages, add_generation_prompt)

    def tokenize(self, text: str) -> list[int]:
        """The text's tokens, special tokens parsed, nothing added (the chat template writes what it needs)."""
        return self.llama.tokenize(text.encode(), add_bos=False, special=True)

    def token_pieces(self, tokens: list[int]) -> list[str]:
        """Each token's share of the decoded text: a byte split across tokens belongs to the token that
        completes it; special tokens write nothing."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        return [decoder.decode(self.llama.detokenize([token], special=False)) for token in tokens]

    def decode(self, tokens: list[int]) -> str:
        return "".join(self.token_pieces(tokens))

    def answer_tokens(self, messages: list[dict], target: str) -> list[int]:
        return self.tokenize(answer_suffix(self.render, messages, target))

    # --- model calls --------------------------------------------------------------------------------------
    def _bitmap(self, image):
        rgb = np.array(image.convert("RGB"), dtype=np.uint8)  # a writable copy: ctypes takes its buffer
        buffer = (ctypes.c_uint8 * rgb.size).from_buffer(rgb)
        bitmap = self._mtmd.mtmd_bitmap_init(rgb.shape[1], rgb.shape[0], buffer)
        if not bitmap:
            raise ValueError(f"llama.cpp could not take a {rgb.shape[1]}x{rgb.shape[0]} image")
        return bitmap

    def _logits(self, index: int = -1) -> np.ndarray:
        pointer = self.llama._ctx.get_logits_ith(index)
        return np.ctypeslib.as_array(pointer, shape=(self.llama.n_vocab(),)).astype(np.float32)

    def prompt_pass(self, image, messages: list[dict]) -> int:
        """Evaluates one image's prompt from an empty cache; returns its length (the next position). The last
        position's logits are then `_logits()`."""
        text = self.render(messages)
        if text.count(self.image_token) != 1:
            raise ValueError(f"the prompt has {text.count(self.image_token)} {self.image_token} placeholders; the "
                             f"llama.cpp runtime takes one image per prompt")
        encoded = text.replace(self.image_token, self.media_marker).encode()
        source = self._mtmd.mtmd_input_text()
        source.text, source.text_len, source.add_special, source.parse_special = encoded, len(encoded), False, True
        bitmap = self._bitmap(image)
        chunks = self._mtmd.mtmd_input_chunks_init()
        try:
            bitmaps = (self._mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap)
            if self._mtmd.mtmd_tokenize(self.mtmd_context, chunks, ctypes.byref(source), bitmaps, 1) != 0:
                raise ValueError("llama.cpp's mtmd could not tokenize the prompt with its image")
            self.llama.reset()
            self.llama._ctx.kv_cache_clear()
            length = self._llama_cpp.llama_pos(0)
            if self._mtmd.mtmd_helper_eval_chunks(self.mtmd_context, self.llama._ctx.ctx, chunks, 0, 0,
                                                  self.llama.n_batch, True, ctypes.byref(length)) != 0:
                raise RuntimeError("llama.cpp could not evaluate the prompt with its image")
        finally:
            self._mtmd.mtmd_input_chunks_free(chunks)
            self._mtmd.mtmd_bitmap_free(bitmap)
        return length.value

    def _feed(self, tokens: list[int], position: int, every_logit: bool = False) -> None:
        """Appends `tokens` at `position` (logits of the last one, or of every one)."""
        self.llama._ctx.kv_cache_seq_rm(0, position, -1)
        self.llama._batch.set_batch(tokens, position, every_logit)
        self.llama._ctx.decode(self.llama._batch)

    def generate(self, images: list, messages: list[list[dict]], max_new_tokens: int,
                 stop_when: Callable[[str], bool] | None = None, sampling=None,
                 on_token: Callable[[int, int], None] | None = None) -> dict:
        """Replies as `OnnxVLM.generate` gives them (texts, tokens up to and including the end token,
        log_probs), one prompt after another."""
        rng = np.random.default_rng(sampling.seed) if sampling is not None and not sampling.greedy else None
        texts, tokens, log_probs = [], [], []
        for row, (image, conversation) in enumerate(zip(images, messages)):
            position = self.prompt_pass(image, conversation)
            reply, scores = [], []
            for _ in range(max_new_tokens):
                logp = log_softmax(self._logits()[None])
                token = int(choose_tokens(logp, sampling, rng)[0])
                reply.append(token)
                scores.append(float(logp[0, token]))
                if on_token is not None:
                    on_token(row, token)
                if token in self.end_ids or (stop_when is not None and stop_when(self.decode(reply))):
                    break
                self._feed([token], position)
                position += 1
            texts.append(self.decode(reply).strip())
            tokens.append(reply)
            log_probs.append(scores)
        return {"texts": texts, "tokens": tokens, "log_probs": log_probs}

    def answer_log_likelihoods(self, images: list, messages: list[list[dict]],
                               answers: list[list[int]]) -> np.ndarray:
        """(images, answers) summed log-probability of each answer's tokens after each prompt; the prompt runs
        once per image, each answer after it from the prompt's cache."""
        totals = np.zeros((len(images), len(answers)))
        for row, (image, conversation) in enumerate(zip(images, messages)):
            length = self.prompt_pass(image, conversation)
            first = log_softmax(self._logits()[None])[0]
            for column, answer in enumerate(answers):
                totals[row, column] = first[answer[0]]
                if len(answer) > 1:
                    self._feed(answer[:-1], length, every_logit=True)
                    for k, token in enumerate(answer[1:]):
                        totals[row, column] += log_softmax(self._logits(k)[None])[0, token]
        return totals
