#include <ctype.h>
#include "tally.h"

unsigned long tally_words(FILE *f)
{
    unsigned long n = 0;
    int c, in_word = 0;
    while ((c = getc(f)) != EOF) {
        if (isspace(c)) {
            in_word = 0;
        } else if (!in_word) {
            in_word = 1;
            n++;
        }
    }
    return n;
}
