#include "cyca.h"

const char *cyca_name(void)
{
    return "a";
}
