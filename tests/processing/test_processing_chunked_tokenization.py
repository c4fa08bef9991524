"""With a SentencePiece-style tokenizer (a prefix space at the start of every encoded text), tokenizing the prompt
piece by piece, as the official code does, gives different ids from tokenizing it whole; the processor must produce
the piecewise ids."""

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from xsam_hf.processing import XSamProcessor
from xsam_hf.processing.image_processing import build_sam_image_processor, build_siglip_image_processor

CHAT_TOKENS = ["<|user|>", "<|end|>", "<|assistant|>"]


@pytest.fixture(scope="module")
def metaspace_tokenizer():
    """A tiny BPE with a Metaspace pre-tokenizer (Llama/Phi-3 style prefix space), trained offline."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    tokenizer.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first")
    corpus = [
        "Describe the image in detail.",
        "Sure, it is a cat on the sofa.",
        "Can you segment the image based on the following regions?",
        "\nA photo of a cat and a dog.",
    ] * 20
    trainer = trainers.BpeTrainer(
        vocab_size=160, special_tokens=["<unk>", "<s>", "<|endoftext|>", *CHAT_TOKENS], initial_alphabet=["\n"]
    )
    tokenizer.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<unk>",
        additional_special_tokens=CHAT_TOKENS,
    )


def test_chunked_ids_differ_from_whole_string_and_are_the_ones_produced(metaspace_tokenizer, photos):
    processor = XSamProcessor(build_siglip_image_processor(56), build_sam_image_processor(128), metaspace_tokenizer)
    tok = processor.tokenizer
    question, answer = "Describe the image in detail.", "Sure, it is a cat on the sofa."
    inputs = processor(
        images=photos["chelsea"],
        task="conversation",
        conversation=[{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
        return_labels=True,
    )
    ids = inputs["input_ids"][0].tolist()

    encode = lambda text: tok.encode(text, add_special_tokens=False)  # noqa: E731
    instruction_tail = f"\n{question}<|end|>\n<|assistant|>\n"
    chunked = [tok.bos_token_id, *encode("<|user|>\n"), -200, *encode(instruction_tail)]
    chunked += [*encode(answer + "<|end|>"), *encode("\n")]
    assert ids == chunked

    # Whole-string tokenization of the same text (placeholder removed) is different: no prefix space at the start of
    # the question nor of the answer.
    whole = encode(f"<|user|>\n{instruction_tail}{answer}<|end|>\n")
    assert [i for i in ids if i >= 0][1:] != whole
    after_image = tok.convert_ids_to_tokens(ids[ids.index(-200) + 1])
    assert after_image == "\u2581"
    answer_start = inputs["labels"][0].tolist().index(next(i for i in inputs["labels"][0].tolist() if i != -100))
    assert tok.convert_ids_to_tokens(ids[answer_start]).startswith("\u2581S")
    assert not any(t.startswith("\u2581S") for t in tok.convert_ids_to_tokens(whole))
