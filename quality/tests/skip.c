/* Stand-in for a quality test when LAPACKE/OpenBLAS are missing. */
#include <stdio.h>
int main(void)
{
    printf("SKIPPED: %s\n", SKIP_REASON);
    return 77;
}
