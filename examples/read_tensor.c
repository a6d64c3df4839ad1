/* read_tensor.c — open a .expert file, find one F32 tensor by name and read
 * it as floats (its SHA-256 is checked on this first access).
 *
 *   cc read_tensor.c $(pkg-config --cflags --libs expert) -o read_tensor
 *   ./read_tensor FILE TENSOR_NAME
 */
#include <expert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s FILE TENSOR_NAME\n", argv[0]);
        return 2;
    }
    expert_reader *r = NULL;
    expert_error err;
    uint32_t index;
    expert_section_info s;
    if (expert_open(argv[1], NULL, &r, &err) != EXPERT_OK ||
        expert_find(r, argv[2], strlen(argv[2]), &index) != EXPERT_OK ||
        expert_section(r, index, &s) != EXPERT_OK) {
        fprintf(stderr, "%s: %s\n", argv[1],
                r == NULL ? err.message : "no such tensor");
        expert_close(r);
        return 1;
    }
    if (s.dtype != EXPERT_DTYPE_F32) {
        fprintf(stderr, "%s is %s, not F32\n", argv[2], expert_dtype_name(s.dtype));
        expert_close(r);
        return 1;
    }
    size_t n = (size_t)s.decoded_length / sizeof(float);
    float *x = malloc(n ? n * sizeof *x : 1);
    if (x == NULL || expert_read(r, index, x, n * sizeof *x, 0, &err) != EXPERT_OK) {
        fprintf(stderr, "%s: %s\n", argv[2], x == NULL ? "out of memory" : err.message);
        free(x);
        expert_close(r);
        return 1;
    }
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += x[i];
    printf("%s: %s [", argv[2], expert_section_type_name(s.type));
    for (unsigned d = 0; d < s.rank; d++)
        printf(d ? ", %llu" : "%llu", (unsigned long long)s.dims[d]);
    printf("], %zu floats, sum %.9g\n", n, sum);
    free(x);
    expert_close(r);
    return 0;
}
