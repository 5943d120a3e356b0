"""The routing lab (issue 18): a CALIS-calibrated year replayed through the hub's ranking.

`run.py routing-lab` builds a world from a seed (world.py), replays its requests in
simulated time (replay.py) under five configurations (configurations.py) — static tier
order; scorecard ranking; + holdings learning; + availability checks; + last resort —
each ranking every request with the hub's own `broker.policy.Policy.rota`, and prints
the figures (metrics.py, lab.py). `demo.compare_on` does the same, two ways, on the
demo's network.

Calibration, from the CALIS report (《CALIS文献获取服务体系的建设与思考》, 数字图书馆论坛
2013 no. 1, DOI 10.3772/j.issn.1673-2286.2013.01.009):

- §3.4: the centre handled 100,929 requests from its start on 2011-06-01 to May 2012,
  average fill rate 85.32 %; 281 service libraries by 31 May (the default --requests
  and --suppliers; the year starts 2011-06-01). Demand grows over the year ("业务量
  随着成员馆数量不断地增加") and is quiet in the vacations.
- §3.1: 900-odd member libraries over all 31 provinces (--libraries 900; PROVINCES).
- §2.3.2, §3.2: besides the universities, 国家图书馆, 上海图书馆, NSTL, CASHL and
  commercial full text (维普/CNKI pay-per-view) supply (NLC:CN, ISIL:CN-SHL, NSTL:CN,
  CASHL:CN, VENDOR:CNKI); §5.4 names 按需出版, the lender of last resort.
- §3.4, §4.1: the fill rate "is not high ... our holdings disclosure is not yet accurate"
  (馆藏揭示还不是很准确): a quarter of the service libraries list many items they do not
  hold (accuracy 0.55-0.8, the rest 0.85-0.98; about 85 % of all listings are true),
  and 3-15 % of each library's real holdings are unlisted.
- §3.4, §4.3: service capacity is uneven (服务能力尚需进一步提高, 服务水平参差不齐): 30 %
  of the offices are weak (reliability 0.55-0.8, silent 6-15 %, slow), capacity grows
  with the library's size, and a supplier past its capacity slows and loses requests.
- §1: what readers ask for through ILL is increasingly the scarce and hard to find
  (稀缺资源以及难以查找和获取的资源): 9-29 % of items (more in the long tail) are held by
  no library in the network.
- §3.3: Shanghai Library filled 92.27 % of 4,090 loan requests in October 2012 (its
  reliability 0.97 and 80 % of held books on the shelf keep it near that).
- Not in the report, assumed: copies are 80 % of requests (national book loans had just
  begun, §3.3); fees 8-20 CNY a copy, 25-50 CNY a loan; readers give up after 7-21 days
  (Rush 3-8); university ILL offices close, unannounced, for parts of the winter and
  summer vacations and National Day week; offices do not answer at weekends; catalogues
  (85 % of libraries have one) tell the truth 85-97 % of the time, else are stale or
  silent. The hub's deadlines are its defaults (72 h, Rush 24 h).

With these, static tier order fills close to CALIS's 85.32 % (see README "Routing lab").
The ranking never reads the hidden truth: only the history the hub would have recorded
(scorecards, answers about listed holdings) and what catalogues answer.
"""
