# tokensieve: `make demo` and `make test` each do all set-up first (idempotent, cached under $TOKENSIEVE_HOME).
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
TOKENSIEVE_HOME ?= $(HOME)/.cache/tokensieve
export TOKENSIEVE_HOME
ENV := source $(TOKENSIEVE_HOME)/env.sh
# All backends: the binary and the tests link libtorch (CPU or CUDA) and load ONNX Runtime.
FEATURES := --all-features

.PHONY: setup build test demo bench bench-memory bench-backends bench-hf test-cuda doctor fixtures clean-cache python wheel

setup:
	@bash libtorch-setup/setup.sh

build: setup
	@$(ENV) && cargo build --release $(FEATURES)

test: setup
	@$(ENV) && cargo fmt --all --check
	@$(ENV) && cargo clippy --workspace --all-targets $(FEATURES) -- -D warnings
	@# The other feature sets users build must compile too (without libtorch; libtorch without FFmpeg).
	@$(ENV) && cargo clippy --workspace --all-targets -- -D warnings
	@$(ENV) && cargo clippy --workspace --all-targets --no-default-features --features torch -- -D warnings
	@# Doc comments are part of the interface: broken intra-doc links fail the build.
	@$(ENV) && RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace $(FEATURES)
	@$(ENV) && cargo test --workspace $(FEATURES)
	@# The Python package, built into the set-up's environment, against the binary just built (same inputs, same
	@# indices), then as a wheel installed into a clean environment.
	@$(ENV) && maturin develop --quiet -m python/Cargo.toml
	@$(ENV) && TOKENSIEVE_BIN=target/debug/tokensieve python -m pytest -q python/tests
	@$(ENV) && bash python/check_wheel.sh debug
	@# The ONNX-only build that CPU and edge machines use: the CLI and the onnx tests with no libtorch in the build
	@# (LIBTORCH_USE_PYTORCH unset, no torch feature), and a binary that does not link it.
	@$(ENV) && env -u LIBTORCH_USE_PYTORCH -u LIBTORCH cargo test --workspace --no-default-features --features onnx,video
	@if ldd target/debug/tokensieve | grep -q torch; then echo "the onnx-only binary links libtorch" >&2; exit 1; fi

# The Python package in the set-up's environment (editable; `import tokensieve` then works there).
python: setup
	@$(ENV) && maturin develop --release -m python/Cargo.toml

# An abi3 wheel (CPython >= 3.10) in target/wheels, with the FFmpeg libraries it links bundled (auditwheel repair).
wheel: setup
	@$(ENV) && bash python/check_wheel.sh release

doctor: build
	@$(ENV) && ./target/release/tokensieve doctor

# The demo's model: LLaVA-OneVision geometry (SigLIP 384/14, Qwen2-style LM) with RANDOM weights, created once in the
# cache. MODEL=<model dir or HF id in the local hub cache> makes the demo answer a question with a real model too.
DEMO_MODEL := $(TOKENSIEVE_HOME)/models/demo-onevision
DEMO_VIDEO = "$$TOKENSIEVE_ASSETS/videos/vtest.avi"
MODEL ?=

demo: build
	@$(ENV) && ./target/release/tokensieve doctor
	@$(ENV) && ./target/release/tokensieve init-model --preset demo --out $(DEMO_MODEL)
	@$(ENV) && cargo run --release $(FEATURES) --example prune_video -- $(DEMO_VIDEO) target/demo
	@echo "--- The demo model has RANDOM weights: its answers are meaningless; token counts, FLOPs and timings are real."
	@$(ENV) && ./target/release/tokensieve compress --model $(DEMO_MODEL) --video $(DEMO_VIDEO) --frames 8 --pruner todre --ratio 0.1 --out target/demo/compress
	@$(ENV) && ./target/release/tokensieve bench --model $(DEMO_MODEL) --video $(DEMO_VIDEO) --frames 8 --pruner todre --plot target/demo/bench.png
	@$(ENV) && cargo run --release $(FEATURES) --example ask_video -- $(DEMO_MODEL) $(DEMO_VIDEO)
	@$(ENV) && examples/query_aware.sh target/release/tokensieve target/demo/query-aware
	@$(ENV) && ./target/release/tokensieve ask --model "$$TOKENSIEVE_ASSETS/llm/SmolLM2-135M-Instruct.Q4_1.gguf" --max-new-tokens 40 "In one sentence, why do video language models prune visual tokens?"
	@if [ -n "$(MODEL)" ]; then $(ENV) && ./target/release/tokensieve ask --model "$(MODEL)" --video $(DEMO_VIDEO) --frames 8 --pruner todre --ratio 0.25 "What happens in this video?"; fi

bench: setup
	@$(ENV) && cargo bench --bench pruners $(FEATURES)
	@$(ENV) && cargo bench --bench sampling $(FEATURES)
	@$(ENV) && cargo bench --bench prefill $(FEATURES)

# Peak memory and TTFT against the number of frames (the README's memory line): 8 to 512 frames of the 795-frame
# vtest.avi at a 10 % budget, decoded while the tower encodes, on the demo model and on the realistic onevision-0.5b
# (SigLIP-so400m encodes about 2-3 s a frame on 2 CPU cores: that sweep takes about half an hour).
MEMORY_ARGS = --video $(DEMO_VIDEO) --frames-sweep 8,32,128,512 --budgets 10% --pruner todre --new-tokens 8

bench-memory: build
	@$(ENV) && ./target/release/tokensieve init-model --preset demo --out $(DEMO_MODEL)
	@$(ENV) && ./target/release/tokensieve bench --model $(DEMO_MODEL) $(MEMORY_ARGS) --plot target/bench-memory-demo.png
	@$(ENV) && ./target/release/tokensieve init-model --preset onevision-0.5b --out $(BIG_MODEL)
	@$(ENV) && ./target/release/tokensieve bench --model $(BIG_MODEL) --device cpu $(MEMORY_ARGS) --plot target/bench-memory-0.5b.png

# The README's CPU comparison of the two backends: the realistic-size random LLaVA-OneVision (SigLIP-so400m +
# Qwen2-0.5B shapes, ~0.9 B parameters), written and exported to ONNX (fp32 and q8) once in the cache, then `bench`
# on torch (CPU), onnx fp32 and onnx q8. Needs transformers and onnx for the export (about 10 GB of disk, minutes).
BIG_MODEL := $(TOKENSIEVE_HOME)/models/onevision-0.5b
BENCH_VIDEO = "$$TOKENSIEVE_ASSETS/videos/bikes.mp4"
BENCH_ARGS = --video $(BENCH_VIDEO) --frames 4 --budgets 100%,10% --repeats 3 --new-tokens 16 --pruner todre

bench-backends: build
	@$(ENV) && ./target/release/tokensieve init-model --preset onevision-0.5b --out $(BIG_MODEL)
	@$(ENV) && python -c "import transformers, onnx" 2>/dev/null || pip install -q "transformers==5.24.0" accelerate onnx
	@$(ENV) && [ -f $(BIG_MODEL)-onnx/onnx/decoder_model_merged_quantized.onnx ] || python models/export/export_onnx.py --model $(BIG_MODEL) --out $(BIG_MODEL)-onnx --precision q8
	@$(ENV) && ./target/release/tokensieve bench --model $(BIG_MODEL) --device cpu --dtype f32 $(BENCH_ARGS) --plot target/bench-torch.png
	@$(ENV) && ./target/release/tokensieve bench --backend onnx --model $(BIG_MODEL)-onnx $(BENCH_ARGS) --plot target/bench-onnx.png
	@$(ENV) && ./target/release/tokensieve bench --backend onnx --precision q8 --model $(BIG_MODEL)-onnx $(BENCH_ARGS) --plot target/bench-onnx-q8.png

# The same checkpoint, frames, budgets and threads through Hugging Face transformers (what a user would run instead)
# and tokensieve's torch and ONNX backends, in one run: encode ms, prefill ms and decode tokens/s, with ratios.
bench-hf: build
	@$(ENV) && ./target/release/tokensieve init-model --preset onevision-0.5b --out $(BIG_MODEL)
	@$(ENV) && python -c "import transformers, onnx" 2>/dev/null || pip install -q "transformers==5.24.0" accelerate onnx
	@$(ENV) && [ -f $(BIG_MODEL)-onnx/onnx/decoder_model_merged_quantized.onnx ] || python models/export/export_onnx.py --model $(BIG_MODEL) --out $(BIG_MODEL)-onnx --precision q8
	@mkdir -p target/bench-hf && rm -f target/bench-hf/frames/*.png
	@$(ENV) && ./target/release/tokensieve sample $(BENCH_VIDEO) --frames 4 --out target/bench-hf/frames > /dev/null
	@$(ENV) && ./target/release/tokensieve bench --model $(BIG_MODEL) --device cpu $(BENCH_ARGS) --json --plot target/bench-hf/torch.png > target/bench-hf/torch.json
	@$(ENV) && ./target/release/tokensieve bench --model $(BIG_MODEL) --device cpu --precision q8 $(BENCH_ARGS) --json --plot target/bench-hf/torch-q8.png > target/bench-hf/torch-q8.json
	@$(ENV) && ./target/release/tokensieve bench --model $(BIG_MODEL) --device cpu --dtype f32 $(BENCH_ARGS) --json --plot target/bench-hf/torch-f32.png > target/bench-hf/torch-f32.json
	@$(ENV) && ./target/release/tokensieve bench --backend onnx --model $(BIG_MODEL)-onnx $(BENCH_ARGS) --json --plot target/bench-hf/onnx.png > target/bench-hf/onnx-fp32.json
	@$(ENV) && ./target/release/tokensieve bench --backend onnx --precision q8 --model $(BIG_MODEL)-onnx $(BENCH_ARGS) --json --plot target/bench-hf/q8.png > target/bench-hf/onnx-q8.json
	@$(ENV) && python benches/hf_side_by_side.py --model $(BIG_MODEL) --frames target/bench-hf/frames --new-tokens 16 --repeats 3 --rows target/bench-hf/torch.json target/bench-hf/torch-q8.json target/bench-hf/torch-f32.json target/bench-hf/onnx-fp32.json target/bench-hf/onnx-q8.json

# The CUDA checks, for a machine with a GPU. Fails at once when libtorch sees no CUDA device (it never passes on a
# CPU); otherwise runs the parity tests, which loop over the CPU and every CUDA device (f32; OneVision also bf16 and
# f16), the pruners on CUDA tensors against the CPU backend, and the bench on the device (prefill and decode rows).
test-cuda: setup
	@$(ENV) && python -c "import sys, torch; n = torch.cuda.device_count(); print(f'CUDA devices: {n}'); sys.exit(0 if n else 1)" || { echo "make test-cuda: libtorch sees no CUDA device on this machine; run it where there is one" >&2; exit 1; }
	@$(ENV) && cargo test --release $(FEATURES) -p tokensieve-models --test decoder_parity --test llava_parity --test onevision_parity --test qwen2_5_vl_parity --test qwen3_vl_parity --test vision_parity --test smollm2
	@$(ENV) && cargo test --release $(FEATURES) -p tokensieve-pruners --test torch_parity
	@$(ENV) && cargo build --release $(FEATURES)
	@$(ENV) && ./target/release/tokensieve init-model --preset demo --out $(DEMO_MODEL)
	@$(ENV) && ./target/release/tokensieve bench --model $(DEMO_MODEL) --device cuda --video $(DEMO_VIDEO) --frames 8 --budgets 100%,10% --repeats 3 --plot target/bench-cuda.png

clean-cache:
	rm -rf $(TOKENSIEVE_HOME)

# Regenerates the committed parity fixtures (not needed by `make test`): transformers + Pillow for preprocessing,
# pycocoevalcap + Java (Debian default-jre-headless) for the caption metrics, gguf + transformers for GGUF.
fixtures: setup
	@command -v java >/dev/null || (apt-get install -y -qq --no-install-recommends default-jre-headless >/dev/null)
	@$(ENV) && pip install -q "transformers==5.24.0" pillow "pycocoevalcap==1.2" gguf accelerate pyarrow onnx
	@# torchvision (the video processors' backend) goes to its own folder: in the main environment it would change
	@# which image-processor backend transformers picks for the Python tests.
	@$(ENV) && [ -d $(TOKENSIEVE_HOME)/torchvision/torchvision ] || pip install -q --no-deps --target $(TOKENSIEVE_HOME)/torchvision "torchvision==0.28.0"
	@$(ENV) && PYTHONPATH=$(TOKENSIEVE_HOME)/torchvision python video/tests/fixtures/make_preprocess_fixtures.py
	@$(ENV) && python tests/fixtures/make_caption_fixtures.py
	@$(ENV) && python tests/fixtures/eval/make_eval_tables.py
	@$(ENV) && python models/tests/fixtures/make_gguf_fixtures.py
	@$(ENV) && python models/tests/fixtures/make_vision_fixtures.py
	@$(ENV) && python models/tests/fixtures/make_decoder_fixtures.py
	@$(ENV) && python models/tests/fixtures/make_onevision_fixtures.py
	@$(ENV) && python models/tests/fixtures/make_llava_fixtures.py
	@$(ENV) && python models/tests/fixtures/make_qwen2_5_vl_fixtures.py
	@$(ENV) && python models/tests/fixtures/make_qwen3_vl_fixtures.py
	@$(ENV) && python models/tests/fixtures/make_dart_fixture.py
	@$(ENV) && python models/tests/fixtures/make_dual_encoder_fixtures.py
	@$(ENV) && python tests/fixtures/make_constructed_siglip.py
	@$(ENV) && for m in models/tests/fixtures/tiny_clip_model models/tests/fixtures/tiny_siglip_model tests/fixtures/constructed_siglip; do \
		python models/export/export_dual_onnx.py --model $$m --out $${m}_onnx || exit 1; done
	@$(ENV) && python models/export/export_onnx.py --model models/tests/fixtures/tiny_llava --out models/tests/fixtures/tiny_llava_onnx --precision fp16,q8
	@$(ENV) && python models/export/export_onnx.py --model models/tests/fixtures/tiny_onevision --out models/tests/fixtures/tiny_onevision_onnx
	@$(ENV) && python models/export/export_onnx.py --model models/tests/fixtures/tiny_qwen2_5_vl --out models/tests/fixtures/tiny_qwen2_5_vl_onnx
	@$(ENV) && python models/export/export_onnx.py --model models/tests/fixtures/tiny_qwen3_vl --out models/tests/fixtures/tiny_qwen3_vl_onnx
	@$(ENV) && python models/tests/fixtures/make_custom_encoder_fixture.py

