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

.PHONY: all deps configure build test run demo bench fuzz format clean

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
