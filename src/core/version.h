/* SPDX-License-Identifier: Apache-2.0 */
/* The version slbd and slbctl report: the VERSION file, plus `git describe` when the build ran
 * in a git checkout (the Makefile generates it into the build tree). */
#ifndef SLB_CORE_VERSION_H
#define SLB_CORE_VERSION_H

/* "0.1.0" or "0.1.0 (git 330e4cb-dirty)"; a static string. */
const char *slb_version(void);

#endif
