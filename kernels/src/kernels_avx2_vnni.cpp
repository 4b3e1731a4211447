// The AVX2 table with int8 on AVX-VNNI (vpdpbusd on 256-bit registers): Intel's AVX2-only server
// cores (Sierra Forest), Alder Lake and later clients, AMD Zen 5. The same source as the AVX2
// table, compiled with -mavxvnni: only I8::mac differs (one vpdpbusd for maddubs + madd + add).
#define SKULENS_AVX2_VNNI 1
#include "kernels_avx2.cpp"
