"""Words about garments: the tag vocabulary and its binarisation (``tags``) and the shopper's word list
(``lexicon``).

Imports only the plumbing at ``core``'s top level."""
