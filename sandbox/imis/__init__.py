"""iMIS simulator: the REST API (``/token`` and ``/api/{Entity}``) of an ASI iMIS site. It
reproduces the OWIN password-grant token, ``PagedResult`` lists with ``limit``/``offset``
paging, ``orderby`` and iMIS query-string filters, the ``$type``-tagged Party, Person,
Activity, Event, EventRegistration and GroupMember records with their validation and writes,
the PartyDeleteLog and ChangeLog journals every party write feeds, the daily
database-restore windows (503) and an ``UpdatedOn`` filter that misses recent rows on
demand. ``sim`` holds the routes and the documented settings; ``resource`` the entity
handlers; ``filter``, ``records``, ``store``, ``party``, ``event``, ``entities``, ``auth``
and ``mutate`` the query language, record shapes, tables, entity specs, tokens and journals.
"""

from sandbox.imis.sim import DEMO_CREDENTIALS, SIM, ImisSim

__all__ = ["DEMO_CREDENTIALS", "SIM", "ImisSim"]
