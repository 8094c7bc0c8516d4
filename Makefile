# Thin wrapper over CMake (like Neovim's): make, make test, make run, make bench.
# SANITIZE=1 builds with ASan+UBSan in its own build folder.
BUILD_TYPE ?= RelWithDebInfo
SANITIZE ?= 0
ifeq ($(SANITIZE),1)
BUILD_DIR ?= build-asan
CMAKE_EXTRA := -DSTOKE_SANITIZE=ON
else
BUILD_DIR ?= build
CMAKE_EXTRA :=
endif
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
DATA_DIR ?= $(CURDIR)/var

FUZZ_S ?= 30
FUZZ_DIR ?= build-fuzz

.PHONY: all deps configure build test chaos run demo bench fuzz format clean

all: build

deps:
	@packaging/install-deps.sh

$(BUILD_DIR)/CMakeCache.txt:
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_EXTRA)

configure: deps $(BUILD_DIR)/CMakeCache.txt

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) $(CTEST_ARGS)

# The chaos test (tests/chaos_test.sh) CHAOS_RUNS times, each with its own seed (random, or
# CHAOS_SEED, CHAOS_SEED+1, ...); each run's seed and summary line, then a summary of all.
# CHAOS_KILLS, CHAOS_LONG=1 and the other knobs of the test pass through.
CHAOS_RUNS ?= 1
chaos: build
	@runs=$(CHAOS_RUNS); pass=0; failed=""; log=$$(mktemp /tmp/stoke-chaos.XXXXXX); \
	for i in $$(seq 1 $$runs); do \
		if [ -n "$$CHAOS_SEED" ]; then seed=$$((CHAOS_SEED + i - 1)); \
		else seed=$$(($$(od -An -N4 -tu4 /dev/urandom) % 1000000)); fi; \
		echo "=== chaos run $$i of $$runs: seed $$seed"; \
		{ STOKE_BUILD=$(CURDIR)/$(BUILD_DIR) CHAOS_SEED=$$seed bash tests/chaos_test.sh; \
		  echo $$? >"$$log.rc"; } 2>&1 | tee "$$log"; \
		if [ "$$(cat "$$log.rc")" = 0 ]; then pass=$$((pass + 1)); r=ok; \
		else failed="$$failed $$seed"; r=FAIL; fi; \
		sum=$$(grep '^chaos seed=' "$$log" | tail -n 1); \
		echo "$$r: $${sum:-chaos seed=$$seed: no summary (it stopped early; see above)}" >>"$$log.all"; \
	done; \
	echo "=== chaos: $$pass of $$runs runs passed$${failed:+; failed seeds:$$failed}"; \
	cat "$$log.all"; rm -f "$$log" "$$log.all" "$$log.rc"; \
	[ -z "$$failed" ]

# stoked in the foreground on $(DATA_DIR) with the stand-in cloud (packaging/dev-run.sh).
run: build
	@packaging/dev-run.sh $(BUILD_DIR) $(DATA_DIR)

# The README's quickstart, unattended, on private ports and folders (the e2e test).
demo: build
	@STOKE_BUILD=$(CURDIR)/$(BUILD_DIR) STOKE_DEMO=1 bash tests/e2e_quickstart_test.sh

bench: build
	@for b in $(BUILD_DIR)/bench/bench_*; do [ -x "$$b" ] && "$$b" || exit 1; done
	@for b in bench/bench_*.sh; do STOKE_BUILD=$(BUILD_DIR) bash "$$b" || exit 1; done

# Every libFuzzer target of tests/fuzz for FUZZ_S seconds each (clang, ASan+UBSan).
fuzz: deps
	@cmake -S . -B $(FUZZ_DIR) -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
		-DSTOKE_FUZZ=ON -DSTOKE_WERROR=OFF >/dev/null
	cmake --build $(FUZZ_DIR) -j $(JOBS) --target fuzz
	@tests/fuzz/run.sh $(FUZZ_DIR) $(FUZZ_S)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build build-asan build-fuzz
