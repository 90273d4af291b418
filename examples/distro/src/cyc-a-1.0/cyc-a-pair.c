#include <stdio.h>
#include "cyca.h"
#ifdef WITH_CYCB
#include <cycb.h>
#endif

/* Prints the pair; a bootstrap build knows only its own half. */
int main(void)
{
#ifdef WITH_CYCB
    printf("%s+%s\n", cyca_name(), cycb_name());
#else
    printf("%s (bootstrap)\n", cyca_name());
#endif
    return 0;
}
