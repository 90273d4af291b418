#include <cyca.h>
#include "cycb.h"

const char *cycb_name(void)
{
    return cyca_name()[0] == 'a' ? "b" : "?";
}
