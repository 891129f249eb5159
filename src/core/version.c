/* SPDX-License-Identifier: Apache-2.0 */
/* The one place the version string is assembled, from the header the Makefile generates. */
#include "core/version.h"

#include "slb_build_version.h"

const char *slb_version(void)
{
    return SLB_GIT_DESCRIBE[0] ? SLB_VERSION " (git " SLB_GIT_DESCRIBE ")" : SLB_VERSION;
}
