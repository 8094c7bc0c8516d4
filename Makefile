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

.PHONY: all deps configure build test run bench format clean

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

run: build
	$(BUILD_DIR)/controller/stoked --data-dir $(DATA_DIR) --api-listen 127.0.0.1:8080 --agent-listen 127.0.0.1:8443

bench: build
	@for b in $(BUILD_DIR)/bench/bench_*; do [ -x "$$b" ] && "$$b" || exit 1; done
	@for b in bench/bench_*.sh; do STOKE_BUILD=$(BUILD_DIR) bash "$$b" || exit 1; done

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build build-asan
