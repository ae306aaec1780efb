# gelan.c build. Sources are found by folder, so adding a file needs no edit here:
#   tensor/ autograd/ nn/ optim/ train/  -> build/libgelan.a
#   infer/ (+ the tensor/ files it uses)  -> build/libgelaninfer.a
#   cli/*.c (+ infer/cli/ but its main)  -> build/gelan
#   infer/cli/*.c                        -> build/gelan-infer
#   tests/test_*.c (one CUnit suite each) -> build/test_runner
#   bench/*.c (one program each)         -> build/bench_*
CC      ?= cc
ARCH    ?= -march=native
OPT     ?= -O3
CFLAGS  ?=
# -fno-trapping-math: nothing here uses FP exceptions, and without it gcc will not
# vectorise loops with float selects or floorf (the SiLU, sigmoid and BN loops)
CFLAGS  += -std=c11 -D_GNU_SOURCE $(OPT) $(ARCH) -fno-math-errno -fno-trapping-math -g -Wall -Wextra -Werror -Wno-format-truncation -I. -I$(B) -MMD -MP -pthread
LDLIBS  := -lyaml -lm -pthread
B       ?= build

LIB_DIRS   := tensor autograd nn optim train export
# infer/ may use only these parts of tensor/ (gelan-infer needs libm and pthreads alone); they
# live in libgelaninfer.a, which every program links after libgelan.a
INFER_CORE := tensor/error.c tensor/pool.c tensor/safetensors.c tensor/json.c
INFER_SRC  := $(wildcard infer/*.c) $(filter $(wildcard $(INFER_CORE)),$(INFER_CORE))
LIB_SRC    := $(filter-out $(INFER_CORE),$(foreach d,$(LIB_DIRS),$(wildcard $(d)/*.c)))
CLI_SRC    := $(wildcard cli/*.c)
ICLI_SRC   := $(wildcard infer/cli/*.c)
TEST_SRC   := $(wildcard tests/test_*.c)
SUITES     := $(patsubst tests/test_%.c,%,$(TEST_SRC))
BENCH_SRC  := $(wildcard bench/*.c)

obj = $(patsubst %.c,$(B)/obj/%.o,$(1))
aobj = $(patsubst %.c,$(B)/asan/%.o,$(1))

.PHONY: all test test-asan bench demo clean format
all: $(B)/libgelan.a $(B)/libgelaninfer.a $(if $(CLI_SRC),$(B)/gelan) $(if $(ICLI_SRC),$(B)/gelan-infer)

$(B)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(B)/libgelan.a: $(call obj,$(LIB_SRC))
	@rm -f $@
	ar rcs $@ $^

$(B)/libgelaninfer.a: $(call obj,$(INFER_SRC))
	@rm -f $@
	ar rcs $@ $^

# gelan bench and gelan detect --model run gelan-infer's code: every infer/cli/ file but its main
GELAN_OBJ := $(call obj,$(CLI_SRC) $(filter-out infer/cli/main.c,$(ICLI_SRC)))
$(B)/gelan: $(GELAN_OBJ) $(B)/libgelan.a $(B)/libgelaninfer.a
	$(CC) $(CFLAGS) -o $@ $(GELAN_OBJ) $(B)/libgelan.a $(B)/libgelaninfer.a $(LDLIBS)

$(B)/gelan-infer: $(call obj,$(ICLI_SRC)) $(B)/libgelaninfer.a
	$(CC) $(CFLAGS) -o $@ $(call obj,$(ICLI_SRC)) $(B)/libgelaninfer.a -lm -pthread

# ---- tests -----------------------------------------------------------------
$(B)/suites.inc: $(TEST_SRC) Makefile
	@mkdir -p $(B)
	@printf '%s\n' $(foreach s,$(SUITES),"SUITE($(s))") > $@.tmp && mv $@.tmp $@

$(B)/obj/tests/main.o: $(B)/suites.inc
$(B)/asan/tests/main.o: $(B)/suites.inc

TEST_OBJ := $(call obj,tests/main.c tests/testutil.c $(TEST_SRC))
$(B)/test_runner: $(TEST_OBJ) $(B)/libgelan.a $(B)/libgelaninfer.a
	$(CC) $(CFLAGS) -o $@ $(TEST_OBJ) $(B)/libgelan.a $(B)/libgelaninfer.a $(LDLIBS) -lcunit

# `make test` runs every suite, then the doc test (tests/doc_test.sh: every ```sh block of
# README.md and docs/*.md runs; see docs/README.md); RUN="..." picks suites (e.g. make test
# RUN="tensor tape"), and the doc test only when RUN names `docs`.
DOC_TEST = bash tests/doc_test.sh $(B)
test: $(B)/test_runner all
	$(if $(filter-out docs,$(RUN)),GELAN_BIN=$(B)/gelan $(B)/test_runner $(filter-out docs,$(RUN)),$(if $(RUN),,GELAN_BIN=$(B)/gelan $(B)/test_runner))
	$(if $(RUN),$(if $(filter docs,$(RUN)),$(DOC_TEST)),$(DOC_TEST))

# The core suites under AddressSanitizer + UndefinedBehaviorSanitizer (CI runs this too).
ASAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -O1
ASAN_SUITES ?= tensor arena pool safetensors tape ops conv2d batchnorm gradcheck infer infer_kernels optim metrics data augment qconv quant
$(B)/asan/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(filter-out $(OPT),$(CFLAGS)) $(ASAN_FLAGS) -c $< -o $@
ASAN_OBJ := $(call aobj,tests/main.c tests/testutil.c $(TEST_SRC) $(sort $(LIB_SRC) $(INFER_SRC)))
$(B)/asan/test_runner: $(ASAN_OBJ)
	$(CC) $(CFLAGS) $(ASAN_FLAGS) -o $@ $^ $(LDLIBS) -lcunit
test-asan: $(B)/asan/test_runner
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  $(B)/asan/test_runner $(filter $(SUITES),$(ASAN_SUITES))

# ---- benchmarks (programs that print tables, never tests) --------------------
BENCH_BIN := $(patsubst bench/%.c,$(B)/bench_%,$(BENCH_SRC))
$(B)/bench_%: $(B)/obj/bench/%.o $(B)/libgelan.a $(B)/libgelaninfer.a
	$(CC) $(CFLAGS) -o $@ $< $(B)/libgelan.a $(B)/libgelaninfer.a $(LDLIBS)
bench: $(BENCH_BIN)
	@for b in $(BENCH_BIN); do echo "== $$b"; $$b || exit 1; done

demo: all
	@bash tools/demo.sh

format:
	clang-format -i $(LIB_SRC) $(INFER_SRC) $(CLI_SRC) $(wildcard tests/*.c) $(wildcard */*.h)

clean:
	rm -rf $(B)

-include $(shell find $(B) -name '*.d' 2>/dev/null)

# ---- fuzzing: the safetensors reader under libFuzzer + ASan/UBSan (needs clang) ----
# `make fuzz` writes a seed corpus with the real writer, then fuzzes for FUZZ_SECONDS;
# the corpus grows in $(B)/fuzz_corpus, crashes land in $(B)/fuzz-crash-*.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_SRC     := tests/fuzz/fuzz_safetensors.c tensor/json.c tensor/safetensors.c tensor/error.c
.PHONY: fuzz
$(B)/fuzz_safetensors: $(FUZZ_SRC) tensor/json.h tensor/safetensors.h tensor/error.h
	@mkdir -p $(B)
	$(FUZZ_CC) -std=c11 -D_GNU_SOURCE -g -O1 -Wall -Wextra -Werror -I. \
	  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -o $@ $(FUZZ_SRC)
$(B)/fuzz_seed: $(FUZZ_SRC) tensor/json.h tensor/safetensors.h tensor/error.h
	@mkdir -p $(B)
	$(CC) -std=c11 -D_GNU_SOURCE -g -Wall -Wextra -Werror -I. -DFUZZ_SEED_MAIN -o $@ $(FUZZ_SRC)
fuzz: $(B)/fuzz_safetensors $(B)/fuzz_seed
	@mkdir -p $(B)/fuzz_corpus
	$(B)/fuzz_seed $(B)/fuzz_corpus $(B)/fuzz_safetensors.dict
	$(B)/fuzz_safetensors -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -dict=$(B)/fuzz_safetensors.dict \
	  -artifact_prefix=$(B)/fuzz-crash- $(B)/fuzz_corpus

# ---- cross-test: infer/ and its tests on aarch64 (NEON kernels) under qemu ----------
# Needs the Debian packages gcc-aarch64-linux-gnu and qemu-user. The infer suites
# build without CUnit through tests/infer_selftest.c; the binary is static, so qemu
# needs no aarch64 sysroot.
CROSS_CC  ?= aarch64-linux-gnu-gcc
CROSS_RUN ?= qemu-aarch64
CROSS_SRC := tests/infer_selftest.c $(INFER_SRC)
.PHONY: cross-test
$(B)/cross/infer_selftest: $(CROSS_SRC) $(wildcard infer/*.h tensor/*.h) tests/test_infer.c tests/test_infer_kernels.c
	@mkdir -p $(dir $@)
	$(CROSS_CC) -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Werror -I. -pthread -static -o $@ $(CROSS_SRC) -lm
cross-test: $(B)/cross/infer_selftest
	$(CROSS_RUN) $(B)/cross/infer_selftest

# ---- cross-test-qconv: the int8 conv kernels on aarch64 under qemu, with and without SDOT ----
# Same packages as cross-test. `-cpu max` has the dot-product extension, so the SDOT path is
# the one selected; cortex-a72 (Raspberry Pi 4) has not, so the plain NEON path is; --expect
# fails the run if qemu's CPU model ever stops matching that. Every path the CPU has is also
# compared with the portable one in both runs.
CROSS_CC  ?= aarch64-linux-gnu-gcc
CROSS_RUN ?= qemu-aarch64
QCONV_CROSS_SRC := tests/qconv_selftest.c infer/qconv.c infer/qconv_x86.c infer/qconv_neon.c tensor/pool.c tensor/error.c
.PHONY: cross-test-qconv
$(B)/cross/qconv_selftest: $(QCONV_CROSS_SRC) infer/qconv.h tests/test_qconv.c tensor/pool.h tensor/error.h
	@mkdir -p $(dir $@)
	$(CROSS_CC) -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Werror -I. -pthread -static -o $@ $(QCONV_CROSS_SRC) -lm
cross-test-qconv: $(B)/cross/qconv_selftest
	$(CROSS_RUN) -cpu max $(B)/cross/qconv_selftest --expect neondot
	$(CROSS_RUN) -cpu cortex-a72 $(B)/cross/qconv_selftest --expect neon

# ---- ONNX export (export/): C for onnx.proto, generated by protoc-c at build time ----
# From the onnx.proto of Debian's python3-onnx (or libonnx-dev); nothing generated is kept
# in the tree. Needs the packages protobuf-c-compiler and libprotobuf-c-dev.
ONNX_PROTO ?= $(firstword $(wildcard /usr/lib/python3/dist-packages/onnx/onnx.proto /usr/include/onnx/onnx.proto))
ONNX_GEN   := $(B)/onnx/onnx.pb-c
LDLIBS     += -lprotobuf-c
$(ONNX_GEN).c: $(ONNX_PROTO)
	@test -n "$(ONNX_PROTO)" || { echo "onnx.proto not found: install python3-onnx (or set ONNX_PROTO=)" >&2; exit 1; }
	@mkdir -p $(dir $@)
	protoc-c --proto_path=$(dir $(ONNX_PROTO)) --c_out=$(dir $@) $(ONNX_PROTO)
$(ONNX_GEN).h: $(ONNX_GEN).c ;
$(ONNX_GEN).o: $(ONNX_GEN).c
	$(CC) $(CFLAGS) -c $< -o $@
$(B)/asan/onnx/onnx.pb-c.o: $(ONNX_GEN).c
	@mkdir -p $(dir $@)
	$(CC) $(filter-out $(OPT),$(CFLAGS)) $(ASAN_FLAGS) -c $< -o $@
$(B)/libgelan.a: $(ONNX_GEN).o
$(B)/asan/test_runner: $(B)/asan/onnx/onnx.pb-c.o
$(call obj,$(wildcard export/*.c)) $(call aobj,$(wildcard export/*.c)): $(ONNX_GEN).h

# ---- MPI (optional): data-parallel training, train/dist.c (docs/MPI.md) ----------------
# MPI=1 compiles and links with Open MPI's mpicc (wrapping $(CC)) and -DGELAN_MPI
# (Debian: libopenmpi-dev openmpi-bin); the default MPI=0 builds train/dist.c's
# one-process version. `make mpi-test` runs tests/mpi_test.sh
# (mpirun -np 2 on this machine).
MPI ?= 0
ifeq ($(MPI),1)
export OMPI_CC := $(CC)
override CC := mpicc
CFLAGS += -DGELAN_MPI
endif
# dist.o is rebuilt when MPI changes
$(call obj,train/dist.c) $(call aobj,train/dist.c): $(B)/mpi-$(MPI).stamp
$(B)/mpi-$(MPI).stamp:
	@mkdir -p $(B) && rm -f $(B)/mpi-*.stamp && touch $@
$(B)/mpi_step: $(B)/obj/tests/mpi_step.o $(B)/libgelan.a $(B)/libgelaninfer.a
	$(CC) $(CFLAGS) -o $@ $< $(B)/libgelan.a $(B)/libgelaninfer.a $(LDLIBS)
.PHONY: mpi-test
mpi-test: $(B)/gelan $(B)/mpi_step
	bash tests/mpi_test.sh $(B)
