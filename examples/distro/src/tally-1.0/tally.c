#include <stdio.h>
#include "tally.h"

int main(void)
{
    printf("%lu\n", tally_words(stdin));
    return 0;
}
