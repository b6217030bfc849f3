// SPDX-License-Identifier: GPL-2.0

#include <linux/gfp.h>
#include <linux/highmem.h>
#include <linux/memory_hotplug.h>
#include <linux/mm.h>
#include <linux/page_ref.h>

struct page *rust_helper_alloc_pages(gfp_t gfp_mask, unsigned int order)
{
	return alloc_pages(gfp_mask, order);
}

void *rust_helper_kmap_local_page(struct page *page)
{
	return kmap_local_page(page);
}

void rust_helper_kunmap_local(const void *addr)
{
	kunmap_local(addr);
}

phys_addr_t rust_helper_page_to_phys(struct page *page)
{
	return page_to_phys(page);
}

struct page *rust_helper_phys_to_page(phys_addr_t phys)
{
	return phys_to_page(phys);
}

struct page *rust_helper_pfn_to_online_page(unsigned long pfn)
{
	return pfn_to_online_page(pfn);
}

int rust_helper_page_ref_count(const struct page *page)
{
	return page_ref_count(page);
}
