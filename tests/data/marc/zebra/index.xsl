<?xml version="1.0" encoding="UTF-8"?>
<!-- What Zebra indexes of a MARCXML record, under the Bib-1 names of its bib1.att, so
     YAZ's standard CQL map (/usr/share/yaz/etc/pqf.properties) reaches them: bath.isbn
     (1=7 ISBN), bath.issn (1=8 ISSN), rec.id (1=12 Local-number), dc.title (1=4).
     An ISBN is indexed as its digits (020 $a "0879832355 (pbk.) :" -> 0879832355). -->
<xsl:stylesheet xmlns:xsl="http://www.w3.org/1999/XSL/Transform"
                xmlns:m="http://www.loc.gov/MARC21/slim"
                xmlns:z="http://indexdata.com/zebra-2.0" version="1.0">
  <xsl:output method="xml" encoding="UTF-8"/>
  <xsl:template match="text()"/>
  <xsl:template match="/m:record">
    <z:record z:id="{normalize-space(m:controlfield[@tag='001'])}" z:type="update">
      <z:index name="Local-number:0">
        <xsl:value-of select="normalize-space(m:controlfield[@tag='001'])"/>
      </z:index>
      <xsl:for-each select="m:datafield[@tag='020']/m:subfield[@code='a']">
        <xsl:variable name="n"
            select="translate(substring-before(concat(normalize-space(.), ' '), ' '), '-', '')"/>
        <z:index name="ISBN:w ISBN:p ISBN:0"><xsl:value-of select="$n"/></z:index>
      </xsl:for-each>
      <xsl:for-each select="m:datafield[@tag='022']/m:subfield[@code='a']">
        <z:index name="ISSN:w ISSN:p ISSN:0"><xsl:value-of select="normalize-space(.)"/></z:index>
      </xsl:for-each>
      <xsl:for-each select="m:datafield[@tag='245']/m:subfield[@code='a']">
        <z:index name="Title:w Title:p"><xsl:value-of select="."/></z:index>
      </xsl:for-each>
    </z:record>
  </xsl:template>
</xsl:stylesheet>
